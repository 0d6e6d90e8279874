// File header I/O: creating a file's header page with a fresh DEK, unwrapping it at open, and
// keeping its link tags (the directory entries that may name it) in step with the namespace.
#pragma once

#include <string>

#include "common/base/status.h"
#include "common/crypto/secret.h"
#include "common/format/file_header.h"
#include "common/format/ids.h"
#include "fs/core/backing_file.h"
#include "fs/core/data_key_source.h"
#include "fs/core/volume.h"

namespace kmsfs::fs {

// What an open needs to build a FileContent: the file's id and its plaintext DEK (32 bytes,
// locked memory, wiped when the FileKey goes). Move-only.
struct FileKey {
  format::Id128 file_id{};
  crypto::SecretBytes dek;
};

// A directory entry: its directory's id and its name in the backing directory (the encoded
// name, or kmsfs.longname.* for a long name). A file header holds one link tag per entry that
// may name the file (docs/format.md §6.2).
struct LinkName {
  format::Id128 dir_id{};
  std::string backing_name;
  friend bool operator==(const LinkName&, const LinkName&) = default;
};

// Hard-link limit: link() beyond it is EMLINK. Renames may go up to the slot capacity
// (format::FileHeader::kMaxLinkTags), since they hold the old and new tag for a moment.
inline constexpr size_t kMaxHardLinks = 64;

// A new file (format.md §6): draws a random file id, asks `keys` for a DEK under the volume's
// KeyId with context volume.FileContext(file_id), writes the 4096-byte header page, then the
// empty file's metadata (FileContent::InitializeEmpty), so the backing file ends at 8192 bytes.
// With volume.links_enabled() the header's first link slot holds the tag of `link` (required
// then: kInvalidArgument if null), all in the same first header write.
// REQUIRES: `backing` is empty (kFailedPrecondition otherwise). Key source errors
// (kPermissionDenied, kKeyUnavailable, kUnavailable) pass through before anything is written;
// kIo from the backing file. A crash part-way leaves a file shorter than 8192 bytes, which every
// later open reports as kCorrupt: the caller should unlink the entry if CreateFile fails.
Result<FileKey> CreateFile(BackingFile* backing, const Volume& volume, DataKeySource* keys,
                           const Requester& who, const LinkName* link = nullptr);

// An existing file: reads and strictly parses the header page (kCorrupt if the file is shorter
// than a page or the header is malformed), then asks `keys` to Decrypt the wrapped DEK with
// volume.FileContext(file_id). Every call asks the key source, so policy applies to every open.
// A wrapped DEK that does not authenticate (edited header, header from another file or volume)
// comes back from keyd as InvalidCiphertextException, i.e. kCorrupt (EIO).
// With volume.links_enabled() and `via` given (the entry the open came through), the header
// must hold via's link tag, checked before keyd is asked: kCorrupt ("not linked under this
// name": a whole file copied or moved over another) otherwise. Null `via` skips the check; the
// filesystem always passes one.
Result<FileKey> OpenFileKey(BackingFile* backing, const Volume& volume, DataKeySource* keys,
                            const Requester& who, const LinkName* via = nullptr);

// Reads and parses the header page (kCorrupt as OpenFileKey) and tells whether it holds the
// link tag of `link`. No keyd. Always true in a volume without links.
Result<bool> HasLink(BackingFile* backing, const Volume& volume, const LinkName& link);

// Rewrites the header's link set: `add`'s tag added, `remove`'s removed (either may be null),
// as one write of the inactive link slot (the key region is never touched), fdatasync, then the
// previously active slot zeroed (no superseded set stays on disk; the zeros are not synced).
// With no set in force before, there is nothing to zero, and the fdatasync happens if `sync`. The backing file's atime and mtime are put back afterwards (a link change is not a
// content change). A no-op (no write) when nothing changes, and in a volume without links.
// `max_links`: kInvalidArgument with EMLINK if the new set would exceed it. kIo from the
// backing file; kCorrupt for a header that does not parse. `*changed` (if given) tells whether
// a slot was written, so a caller undoing an add never removes a tag that was there before.
// Ordering (format.md §6.2): link() adds with sync before the backing link exists; rename adds
// the new name with sync before the backing rename and removes the old one after; unlink of one
// of several names removes its tag after the backing unlink. `sync` = false still syncs once,
// between the slot write and the zeroing (format.md §6.1).
Status UpdateLinks(BackingFile* backing, const Volume& volume, const LinkName* add,
                   const LinkName* remove, bool sync,
                   size_t max_links = format::FileHeader::kMaxLinkTags, bool* changed = nullptr);

}  // namespace kmsfs::fs
