// Syntax of master key ids and aliases as they may appear in kmsfs formats (blobs, kmsfs.conf).
#pragma once

#include <cstddef>
#include <string_view>

namespace kmsfs::format {

// A key id: 1..64 bytes of [A-Za-z0-9-] (e.g. a UUID). It is what a WrappedBlob names, so
// keyd can route a Decrypt without an alias lookup that might have changed since the wrap.
inline constexpr size_t kMaxKeyIdLen = 64;
bool IsValidKeyId(std::string_view id);

// An alias: "alias/" + 1..250 bytes of [A-Za-z0-9/_-] (the AWS KMS alias syntax), at most 256
// bytes in total. Allowed only where a user names a key (kmsfs.conf KeyId), never in a blob.
inline constexpr std::string_view kAliasPrefix = "alias/";
inline constexpr size_t kMaxAliasLen = 256;
bool IsValidAlias(std::string_view alias);

// IsValidKeyId(s) || IsValidAlias(s).
bool IsValidKeyIdOrAlias(std::string_view s);

}  // namespace kmsfs::format
