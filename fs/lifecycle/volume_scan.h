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

// What a walk of the backing tree found: the header files, and every place it could not look
// into (a directory it could not open or read, an entry it could not stat, a mount point of
// another file system), each with its backing path and why. Callers must treat a non-empty
// `unreadable` as "the files list may be incomplete" (retire-version refuses, rewrap fails).
struct BackingTree {
  std::vector<BackingEntry> files;
  std::vector<std::pair<std::string, std::string>> unreadable;  // (backing path, error)
};

// `names` (may be null) decrypts names for BackingEntry::plain_path; it must outlive the call.
// Unreadable directories and entries are not errors: they are listed in BackingTree::unreadable
// and the walk goes on. Names that do not decrypt keep only their backing path. kIo/kNotFound
// only if `cipherdir` itself cannot be read. Does not follow symlinks and does not leave the
// cipher directory's file system (a mount point inside it is listed as unreadable).
Result<BackingTree> ListBackingFiles(const std::string& cipherdir, NameCodec* names);

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
  // (display path, error): headers that did not read or parse, and what the walk could not
  // look into (BackingTree::unreadable).
  std::vector<std::pair<std::string, std::string>> unreadable;
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
