#include "fs/core/dir_id.h"

#include <string>

#include "common/crypto/random.h"
#include "common/format/name_encoding.h"
#include "fs/core/small_file.h"

namespace kmsfs::fs {

Result<format::Id128> ReadDirId(int dirfd) {
  auto contents = ReadSmallFile(dirfd, format::kDirIdName, format::kId128Len);
  if (!contents.ok()) {
    if (contents.error().code() == Code::kNotFound) {
      return Error(Code::kCorrupt, "directory has no kmsfs.dirid");
    }
    if (contents.error().code() == Code::kCorrupt) {
      return Error(Code::kCorrupt, "kmsfs.dirid: " + contents.error().message());
    }
    return contents.error();
  }
  return format::ParseDirId(*contents);
}

Result<format::Id128> CreateDirId(int dirfd) {
  format::Id128 id;
  do {
    crypto::RandomBytes(id);
  } while (id == format::Id128{});
  KMSFS_RETURN_IF_ERROR(WriteNewFileAtomically(dirfd, format::kDirIdName, id, 0400));
  return id;
}

}  // namespace kmsfs::fs
