// File header I/O: creating a file's header page with a fresh DEK, and unwrapping it at open.
#pragma once

#include "common/base/status.h"
#include "common/crypto/secret.h"
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

// A new file (format.md §6): draws a random file id, asks `keys` for a DEK under the volume's
// KeyId with context volume.FileContext(file_id), writes the 4096-byte header page, then the
// empty file's metadata (FileContent::InitializeEmpty), so the backing file ends at 8192 bytes.
// REQUIRES: `backing` is empty (kFailedPrecondition otherwise). Key source errors
// (kPermissionDenied, kKeyUnavailable, kUnavailable) pass through before anything is written;
// kIo from the backing file. A crash part-way leaves a file shorter than 8192 bytes, which every
// later open reports as kCorrupt: the caller should unlink the entry if CreateFile fails.
Result<FileKey> CreateFile(BackingFile* backing, const Volume& volume, DataKeySource* keys,
                           const Requester& who);

// An existing file: reads and strictly parses the header page (kCorrupt if the file is shorter
// than a page or the header is malformed), then asks `keys` to Decrypt the wrapped DEK with
// volume.FileContext(file_id). Every call asks the key source, so policy applies to every open.
// A wrapped DEK that does not authenticate (edited header, header from another file or volume)
// comes back from keyd as InvalidCiphertextException, i.e. kCorrupt (EIO).
Result<FileKey> OpenFileKey(BackingFile* backing, const Volume& volume, DataKeySource* keys,
                            const Requester& who);

}  // namespace kmsfs::fs
