// Backing names: how an encrypted file name is spelled in the backing directory, long names,
// the reserved "kmsfs." namespace, and which plaintext names are acceptable at all.
#pragma once

#include <array>
#include <span>
#include <string>
#include <string_view>

#include "common/base/bytes.h"
#include "common/base/status.h"
#include "common/format/ids.h"

namespace kmsfs::format {

// Every name kmsfs itself creates in a backing directory starts with this prefix, which no
// encoded name can have ('.' is outside the base64url alphabet).
inline constexpr std::string_view kReservedPrefix = "kmsfs.";
inline constexpr std::string_view kVolumeConfigName = "kmsfs.conf";  // volume root only
inline constexpr std::string_view kDirIdName = "kmsfs.dirid";        // every directory
inline constexpr std::string_view kLongNamePrefix = "kmsfs.longname.";
inline constexpr std::string_view kLongNameSideSuffix = ".name";

inline constexpr size_t kMaxNameLen = 255;  // NAME_MAX, for plaintext and backing names
inline constexpr size_t kSivTagLen = 16;
// AES-SIV output for a 1..255-byte name: the 16-byte synthetic IV, then the ciphertext.
inline constexpr size_t kMinSivNameLen = kSivTagLen + 1;
inline constexpr size_t kMaxSivNameLen = kSivTagLen + kMaxNameLen;  // 271 -> 362 chars encoded

// kInvalidArgument (the fs answers EINVAL, or ENAMETOOLONG for length) unless `name` is a
// usable directory entry: not "", "." or "..", no '/' or NUL, at most 255 bytes. The message
// never repeats the name.
Status ValidatePlaintextName(std::string_view name);
// The same rules for a name that came out of decryption; kCorrupt instead: a valid tag over
// ".." or "a/b" means the writer was hostile, and the name must never reach the kernel.
Status ValidateDecryptedName(std::string_view name);

// True for every name in the reserved "kmsfs." namespace: the config, dir id files, long names
// and their side files. Readdir never decodes these as file names.
bool IsReservedBackingName(std::string_view backing_name);

// base64url (no padding) of the SIV output. REQUIRES: siv_output.size() in
// [kMinSivNameLen, kMaxSivNameLen] (checked). The result may exceed 255 bytes: see NeedsLongName.
std::string EncodeName(ByteSpan siv_output);
// The SIV output (tag || ciphertext) named by `encoded`. kCorrupt on bad base64url or a length
// outside [kMinSivNameLen, kMaxSivNameLen].
Result<Bytes> DecodeBackingName(std::string_view encoded);

// An encoded name longer than 255 bytes is stored as LongNameFor(SHA-256(encoded)) with the full
// encoded name in the side file LongNameSideFile(long_name). The fs computes the digest
// (common/crypto); this module only spells the names.
bool NeedsLongName(std::string_view encoded);
// "kmsfs.longname." + base64url(digest): 15 + 43 = 58 bytes.
std::string LongNameFor(std::span<const uint8_t, 32> digest);
// long_name + ".name".
std::string LongNameSideFile(std::string_view long_name);
// The digest in a long name; kCorrupt unless `backing_name` is exactly a LongNameFor() output.
Result<std::array<uint8_t, 32>> ParseLongName(std::string_view backing_name);
// True iff `backing_name` is LongNameSideFile() of a valid long name.
bool IsLongNameSideFile(std::string_view backing_name);
// The side file's contents: exactly the encoded name, no newline. kCorrupt unless it decodes
// (DecodeBackingName) and NeedsLongName holds (a short name never has a side file). The caller
// then checks SHA-256(contents) against ParseLongName of the entry's name.
Result<std::string> ParseLongNameSideFile(ByteSpan contents);

// kmsfs.dirid holds the directory's 16-byte id (the SIV AAD of the names inside), nothing else.
// kCorrupt unless exactly 16 bytes and not all zero (all zero is a torn write).
Result<Id128> ParseDirId(ByteSpan contents);

}  // namespace kmsfs::format
