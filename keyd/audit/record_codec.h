// Record codec: the audit trail's stored bytes — record JSON, its canonical form, the chain hash,
// RFC 3339 times and the LMDB key of a sequence number. Pure functions, no I/O.
//
// A stored record is one line of compact JSON whose members come in this fixed order:
//   {"Sequence":N,"Time":"2024-05-01T12:00:00.000001Z","Operation":..,"KeyId":..,"KeyVersion":..,
//    "Principal":{"Uid","Gid","Pid","Executable","Unit"},"Forwarder":{..}|null,
//    "EncryptionContext":{..},"Path":..,"Decision":..,"Sid":..,"Outcome":..,"Detail":..,
//    "PrevHash":"<64 hex>","Hash":"<64 hex>"}
// Every member is always present (scripts can rely on the names). The CANONICAL BYTES of a record
// are its stored text with the trailing PrevHash and Hash members cut off (the text up to and
// excluding `,"PrevHash"`, then `}`), so Hash = SHA-256(PrevHash || canonical bytes) covers every
// byte that was written, not a re-encoding of it. Record 1's PrevHash is 32 zero bytes.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "common/base/status.h"
#include "common/crypto/hash.h"
#include "keyd/audit/audit_sink.h"

namespace kmsfs::keyd {

// A record as it sits in the trail: the fields plus its chain links.
struct TrailRecord {
  AuditRecord record;
  crypto::Sha256Digest prev_hash{};
  crypto::Sha256Digest hash{};
  std::string json;  // the stored text, verbatim (one line)
};

// A chain position someone vouches for: "the trail had `sequence` records, ending in `hash`".
struct Checkpoint {
  uint64_t sequence = 0;  // number of records ever appended up to this point (dense from 1)
  crypto::Sha256Digest hash{};
  int64_t time_us = 0;
};

// The pre-computable part of a record (Operation .. Detail) as a JSON member list without braces.
// Runs on the appending thread, so the group committer only concatenates and hashes. Strings that
// are not valid UTF-8 are stored with U+FFFD (a bad path must not make a record unwritable and
// the request fail). Throws only std::bad_alloc.
std::string EncodeRecordBody(const AuditRecord& record);

// The stored text of record `sequence` at `time_us` with the given body and predecessor hash;
// sets `*hash` to its chain hash.
std::string ComposeRecord(uint64_t sequence, int64_t time_us, std::string_view body,
                          const crypto::Sha256Digest& prev_hash, crypto::Sha256Digest* hash);

// The canonical bytes of a stored record, or nullopt when its text does not end in the fixed
// `,"PrevHash":"<hex>","Hash":"<hex>"}` shape.
std::optional<std::string> CanonicalBytes(std::string_view stored);

// SHA-256(prev || canonical).
crypto::Sha256Digest ChainHash(const crypto::Sha256Digest& prev, std::string_view canonical);

// Parses a stored record strictly (all members, right types). kCorrupt on anything else. Does NOT
// check the hash; ChainWalker does.
Result<TrailRecord> DecodeTrailRecord(std::string_view stored);

// "2024-05-01T12:34:56.123456Z" (UTC, always 6 fractional digits) and back. Parse accepts only
// exactly that shape; false otherwise.
std::string FormatTime(int64_t time_us);
bool ParseTime(std::string_view text, int64_t* time_us);

// Checkpoint JSON: {"Sequence":N,"Hash":"<hex>","Time":"<rfc3339>"}. Decode: kCorrupt if malformed.
std::string EncodeCheckpoint(const Checkpoint& checkpoint);
Result<Checkpoint> DecodeCheckpoint(std::string_view json_text);

// 64 lower-case hex digits ↔ digest; false on anything else.
std::string DigestHex(const crypto::Sha256Digest& digest);
bool ParseDigestHex(std::string_view hex, crypto::Sha256Digest* out);

// The LMDB key of a sequence number: 8 bytes big-endian, so key order is sequence order.
std::string SequenceKey(uint64_t sequence);
// false unless `key` is exactly 8 bytes.
bool ParseSequenceKey(std::string_view key, uint64_t* sequence);

}  // namespace kmsfs::keyd
