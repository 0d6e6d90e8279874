// ErrnoFor: the one mapping from a core Error to the errno a FUSE operation answers.
#pragma once

#include "common/base/status.h"

namespace kmsfs::fs {

// docs/errors.md §2 through ipc::ErrnoForError, the code copy of that table (kIo and
// kInvalidArgument give back a saved OS errno: ENOSPC, ENAMETOOLONG, EFBIG, ...). The only
// addition: never 0, since a reply with errno 0 would be a success the operation did not have.
int ErrnoFor(const Error& error);

}  // namespace kmsfs::fs
