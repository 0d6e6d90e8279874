// VolumeScan: walks a cipher directory's backing tree, without keys, and lists its files' headers.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "common/base/status.h"
#include "common/format/ids.h"
#include "common/format/volume_config.h"

namespace kmsfs::fs {
class NameCodec;
}

namespace kmsfs::fs::lifecycle {

// One backing file that carries a file header (format.md §6): a regular file whose name is an
// encoded name or a kmsfs.longname.* entry. Reserved files (kmsfs.conf, kmsfs.dirid, *.name side
// files, our own *.tmp) are not listed. A backing file with several hard links is listed once.
struct BackingEntry {
  std::string backing_path;  // absolute path in the backing tree
  // The plaintext path inside the volume ("/dir/file") when the walk had the name key and the
  // names decrypted; otherwise empty (reports then show backing_path).
  std::string plain_path;
  const std::string& Display() const { return plain_path.empty() ? backing_path : plain_path; }
};

// `names` (may be null) decrypts names for BackingEntry::plain_path; it must outlive the call.
// Unreadable directories and names that do not decrypt are not errors: the walk goes on and the
// entry keeps only its backing path. kIo/kNotFound only if `cipherdir` itself cannot be read.
// Does not follow symlinks and does not leave the cipher directory's file system.
Result<std::vector<BackingEntry>> ListBackingFiles(const std::string& cipherdir, NameCodec* names);

// The first FileHeader::kSize bytes of the open backing file `fd` (positional reads, EINTR
// retried). kCorrupt if the file is shorter (format.md §6), kIo on read errors.
Result<Bytes> ReadHeaderPage(int fd);

// The key id and version a header's wrapped DEK names, read in clear (format.md §4).
struct HeaderKey {
  std::string key_id;
  uint32_t version = 0;
};
// Reads and strictly parses the first page of `backing_path`. kCorrupt for a malformed header,
// kIo for I/O errors.
Result<HeaderKey> ReadHeaderKey(const std::string& backing_path);

// How many files are wrapped under each (key id, version), and which key version wraps the
// volume's name key. Read without keys, so unauthenticated like `kmsfs info`.
struct VersionReport {
  format::VolumeConfig config;                                  // as read (unverified)
  HeaderKey name_key;                                           // from kmsfs.conf's NameKeyBlob
  std::map<std::pair<std::string, uint32_t>, uint64_t> files;   // (key id, version) -> count
  uint64_t total = 0;                                           // files with a readable header
  std::vector<std::pair<std::string, std::string>> unreadable;  // (display path, error)
  // Files (plus the name key) still under `key_id` at a version below `version`.
  uint64_t CountBelow(const std::string& key_id, uint32_t version) const;
  // Files (plus the name key) under exactly (key_id, version).
  uint64_t CountAt(const std::string& key_id, uint32_t version) const;
};
// kNotFound if `cipherdir` is not a volume; kCorrupt for an unparsable kmsfs.conf.
Result<VersionReport> ScanVersions(const std::string& cipherdir, NameCodec* names = nullptr);

// The report as text, one line per (key, version), the name key, the total and unreadable files
// (with their paths). `json` selects a JSON object instead (for scripts and tests).
std::string FormatVersionReport(const VersionReport& report, bool json);

}  // namespace kmsfs::fs::lifecycle
