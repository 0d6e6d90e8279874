// Filesystem: directory listing — opendir, readdir(plus), releasedir, fsyncdir.
//
// Names that do not decrypt are skipped with one warn line each (backing inode of the directory,
// never a name). Why not show them: a backing name is not a usable plaintext name (a lookup of
// it would encrypt it again and miss), and failing the whole listing with EIO would hide every
// good entry of the directory. gocryptfs does the same. `kmsfs fsck` is the place to list them.
#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <mutex>
#include <string>

#include "common/format/name_encoding.h"
#include "common/log/log.h"
#include "fs/fuse/filesystem.h"
#include "fs/fuse/sys_util.h"

namespace kmsfs::fs {

// One opendir(3) of a backing directory; fi->fh points at it until releasedir.
struct Filesystem::DirHandle {
  ~DirHandle() {
    if (dp != nullptr) ::closedir(dp);
  }
  std::mutex mu;      // the kernel may send two readdirs on one handle concurrently
  DIR* dp = nullptr;  // guarded by mu
  off_t offset = 0;   // guarded by mu: the backing d_off after the last entry we returned
  format::Id128 dir_id{};
};

void Filesystem::OpenDir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  Inode* inode = InodeOf(ino);
  Answer(
      req, "opendir", inode->id().ino,
      [&]() -> Result<DirHandle*> {
        KMSFS_ASSIGN_OR_RETURN(format::Id128 dir_id, DirIdOf(inode));
        const int fd = ::openat(inode->fd(), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0) return SysError("opendir", errno);
        auto h = std::make_unique<DirHandle>();
        h->dp = ::fdopendir(fd);
        if (h->dp == nullptr) {
          const int err = errno;
          ::close(fd);
          return SysError("opendir", err);
        }
        h->dir_id = dir_id;
        return h.release();
      },
      [fi](fuse_req_t r, DirHandle* h) {
        fi->fh = reinterpret_cast<uint64_t>(h);
        fuse_reply_open(r, fi);
      });
}

void Filesystem::ReadDir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi,
                         bool plus) {
  Inode* inode = InodeOf(ino);
  auto* h = FromFh<DirHandle>(fi->fh);
  std::string out;
  Answer(
      req, plus ? "readdirplus" : "readdir", inode->id().ino,
      [&]() -> Result<size_t> {
        std::lock_guard lock(h->mu);
        out.resize(size);
        char* p = out.data();
        size_t rem = size;
        if (off != h->offset) {
          ::seekdir(h->dp, off);
          h->offset = off;
        }
        const int dir_fd = ::dirfd(h->dp);
        while (true) {
          errno = 0;
          // readdir(3) is safe on a stream no other thread uses: h->mu makes it ours.
          struct dirent* de = ::readdir(h->dp);  // NOLINT(concurrency-mt-unsafe)
          if (de == nullptr) {
            if (errno != 0 && rem == size) return SysError("readdir", errno);
            break;  // end of directory (or an error after some entries: return those)
          }
          const std::string_view backing = de->d_name;
          std::string plain;
          if (backing == "." || backing == "..") {
            plain = backing;
          } else if (format::IsReservedBackingName(backing) &&
                     (!backing.starts_with(format::kLongNamePrefix) ||
                      format::IsLongNameSideFile(backing))) {
            // kmsfs.conf, kmsfs.dirid, side files: ours, not the user's.
            h->offset = de->d_off;
            continue;
          } else {
            auto name = DecryptEntryName(dir_fd, h->dir_id, backing);
            if (!name.ok()) {
              log::Get("fs.fuse")->warn(
                  "readdir: directory inode {}: an entry (backing inode {}) does not decrypt "
                  "and is not listed: {}",
                  inode->id().ino, de->d_ino, name.error().message());
              h->offset = de->d_off;
              continue;
            }
            plain = std::move(*name);
          }
          size_t entsize;
          if (plus) {
            fuse_entry_param e{};
            if (plain == "." || plain == "..") {
              // No lookup for these: the kernel does not count them (e.ino stays 0).
              e.attr.st_ino = de->d_ino;
              e.attr.st_mode = static_cast<mode_t>(de->d_type) << 12;
            } else {
              auto looked = LookupBacking(inode, std::string(backing), plain);
              if (!looked.ok()) {
                // Gone since readdir saw it, or unreadable: list the name without attributes
                // (ino 0 makes the kernel look it up itself when it is used).
                e.attr.st_ino = de->d_ino;
                e.attr.st_mode = static_cast<mode_t>(de->d_type) << 12;
              } else {
                e = *looked;
              }
            }
            entsize = fuse_add_direntry_plus(req, p, rem, plain.c_str(), &e, de->d_off);
            if (entsize > rem) {
              // Did not fit: the kernel never sees this entry, so it must not count the lookup.
              // The next readdir starts from h->offset and reads it again.
              if (e.ino != 0) inodes_.Forget(InodeOf(e.ino), 1);
              ::seekdir(h->dp, h->offset);
              break;
            }
          } else {
            struct stat st {};
            st.st_ino = de->d_ino;  // the backing inode number, as getattr's st_ino
            st.st_mode = static_cast<mode_t>(de->d_type) << 12;
            entsize = fuse_add_direntry(req, p, rem, plain.c_str(), &st, de->d_off);
            if (entsize > rem) {
              ::seekdir(h->dp, h->offset);
              break;
            }
          }
          p += entsize;
          rem -= entsize;
          h->offset = de->d_off;
        }
        return size - rem;
      },
      [&out](fuse_req_t r, size_t n) { fuse_reply_buf(r, out.data(), n); });
}

void Filesystem::ReleaseDir(fuse_req_t req, fuse_ino_t /*ino*/, fuse_file_info* fi) {
  delete FromFh<DirHandle>(fi->fh);
  fuse_reply_err(req, 0);
}

void Filesystem::FSyncDir(fuse_req_t req, fuse_ino_t ino, int datasync, fuse_file_info* fi) {
  Inode* inode = InodeOf(ino);
  auto* h = FromFh<DirHandle>(fi->fh);
  AnswerEmpty(req, "fsyncdir", inode->id().ino, [&]() -> Status {
    std::lock_guard lock(h->mu);
    const int fd = ::dirfd(h->dp);
    const int rc = datasync ? ::fdatasync(fd) : ::fsync(fd);
    if (rc != 0) return SysError("fsyncdir", errno);
    return Status::Ok();
  });
}

}  // namespace kmsfs::fs
