// ErrnoFor: the one mapping from a core Error to the errno a FUSE operation answers.
#pragma once

#include "common/base/status.h"

namespace kmsfs::fs {

// docs/errors.md §2, by way of ipc::ErrnoForError (the code copy of that table), with one
// refinement: a kInvalidArgument that carries an OS errno answers that errno. The core sets one
// where EINVAL would mislead: ENAMETOOLONG for a name over 255 bytes (ValidatePlaintextName),
// EFBIG for an offset beyond format::kMaxPlaintextSize (FileContent). Never returns 0.
int ErrnoFor(const Error& error);

}  // namespace kmsfs::fs
