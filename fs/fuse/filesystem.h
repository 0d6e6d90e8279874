// Filesystem: the kmsfs FUSE operations — plaintext names, contents and keys over a backing tree.
#pragma once

#include <sys/stat.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "common/base/status.h"
#include "common/base/unique_fd.h"
#include "common/format/ids.h"
#include "fs/core/data_key_source.h"
#include "fs/core/file_header_io.h"
#include "fs/core/name_codec.h"
#include "fs/core/open_file_table.h"
#include "fs/core/posix_backing_file.h"
#include "fs/core/volume.h"
#include "fs/fuse/inode_table.h"
#include "fs/fuse/reply.h"  // FUSE_USE_VERSION + <fuse_lowlevel.h>

namespace kmsfs::fs {

// The kernel hands back what we gave it as fuse_ino_t / fh: the addresses of our Inode and
// handle objects (as passthrough_hp does), alive until forget / release.
template <class T>
T* FromFh(uint64_t value) {
  return reinterpret_cast<T*>(value);  // NOLINT(performance-no-int-to-ptr)
}

struct FilesystemOptions {
  // Kernel attribute and entry cache lifetime (seconds). Every change goes through this mount,
  // so the kernel's caches stay coherent; 1 s bounds the damage of edits behind our back.
  double timeout = 1.0;
  // Revocation bound for open handles (docs/filesystem.md "Revocation of open files"): how
  // often RevalidateOpenFiles should run. Zero: never (open handles keep their key until closed).
  std::chrono::milliseconds key_revalidate{5000};
};

// The passthrough_hp shape (low-level API, an inode table keyed by backing (dev, ino) holding an
// O_PATH fd and a lookup count, one reply per request), with names encrypted per directory
// (NameCodec), contents per file (FileContent) and a key request to keyd on every create and
// open, made with the caller's identity from fuse_req_ctx and the file's plaintext path.
//
// Every public operation replies exactly once, through Answer() (reply.h). Thread-safe: the
// multi-threaded session loop calls operations concurrently; see Inode for the lock order.
// Volume and DataKeySource are borrowed and must outlive the Filesystem.
class Filesystem {
 public:
  // `root_fd` is an O_PATH fd of the cipher directory.
  static Result<std::unique_ptr<Filesystem>> Create(UniqueFd root_fd, Volume* volume,
                                                    DataKeySource* keys,
                                                    const FilesystemOptions& options);
  // Frees the handles the kernel never released: after an unmount, RELEASE requests still in
  // flight are not delivered, so a file closed just before it leaves its handle behind.
  ~Filesystem();
  Filesystem(const Filesystem&) = delete;
  Filesystem& operator=(const Filesystem&) = delete;

  void Init(fuse_conn_info* conn);
  void Lookup(fuse_req_t req, fuse_ino_t parent, const char* name);
  void Forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup);
  void ForgetMulti(fuse_req_t req, size_t count, fuse_forget_data* forgets);
  void GetAttr(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
  void SetAttr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int valid, fuse_file_info* fi);
  void ReadLink(fuse_req_t req, fuse_ino_t ino);
  void MkNod(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, dev_t rdev);
  void MkDir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode);
  void Unlink(fuse_req_t req, fuse_ino_t parent, const char* name);
  void RmDir(fuse_req_t req, fuse_ino_t parent, const char* name);
  void Symlink(fuse_req_t req, const char* target, fuse_ino_t parent, const char* name);
  void Rename(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t new_parent,
              const char* new_name, unsigned int flags);
  void Link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t new_parent, const char* new_name);
  void Open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
  void Create(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, fuse_file_info* fi);
  void Read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi);
  void Write(fuse_req_t req, fuse_ino_t ino, const char* buf, size_t size, off_t off,
             fuse_file_info* fi);
  void Flush(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
  void Release(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
  void FSync(fuse_req_t req, fuse_ino_t ino, int datasync, fuse_file_info* fi);
  void FAllocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length,
                 fuse_file_info* fi);
  void OpenDir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
  void ReadDir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi,
               bool plus);
  void ReleaseDir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
  void FSyncDir(fuse_req_t req, fuse_ino_t ino, int datasync, fuse_file_info* fi);
  void StatFs(fuse_req_t req, fuse_ino_t ino);
  void SetXattr(fuse_req_t req, fuse_ino_t ino, const char* name, const char* value, size_t size,
                int flags);
  void GetXattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size);
  void ListXattr(fuse_req_t req, fuse_ino_t ino, size_t size);
  void RemoveXattr(fuse_req_t req, fuse_ino_t ino, const char* name);

  // Revocation of open files: asks keyd again, for every open handle (one Decrypt per inode and
  // distinct opener uid/gid/pid, with the file's current path), whether its opener may still
  // decrypt the file. A refusal (policy Deny, key disabled or pending deletion, keyd down or
  // timed out: fail closed) makes the handle's reads and writes fail with that error's errno;
  // when no handle of the inode is granted any more, the DEK is wiped. A later grant (EnableKey,
  // keyd back) restores the handle and, if needed, the DEK. Returns the kernel inode numbers
  // whose page cache the caller must drop (fuse_lowlevel_notify_inval_inode), with no lock
  // held. Call from one thread at a time, never from inside a request (it takes io_mu
  // exclusively). Each keyd call is bounded by the client's key timeout.
  std::vector<fuse_ino_t> RevalidateOpenFiles();
  // `hook` runs once, on the first open of a regular file (mount.cc raises the read-ahead
  // there). Set before the session loop runs.
  void SetFirstOpenHook(std::function<void()> hook) { first_open_hook_ = std::move(hook); }
  // `hook` tells the kernel that its cached attributes of an inode are out of date (mount.cc:
  // fuse_lowlevel_notify_inval_inode with no page range). Called from request handlers, when
  // KillSuidGid changed a mode the kernel did not ask to change. Set before the loop runs.
  void SetAttrChangedHook(std::function<void(fuse_ino_t)> hook) {
    attr_changed_hook_ = std::move(hook);
  }
  const FilesystemOptions& options() const { return options_; }

  // Number of inodes the kernel holds (tests, leak checks).
  size_t InodeCount() { return inodes_.size(); }

 private:
  struct DirHandle;
  struct FileHandle;
  // Whether keyd still lets one open handle's opener decrypt its file (RevalidateOpenFiles).
  // Shared by the handle and the revalidation snapshot, so it outlives a concurrent release.
  struct Grant {
    Inode* inode;
    uid_t uid;
    gid_t gid;
    pid_t pid;
    // Code of keyd's last refusal for this opener (kOk while granted). Written under
    // inode->mu with io_mu exclusive; read by I/O under io_mu.
    std::atomic<Code> refused{Code::kOk};
  };
  // A name as it is spelled in a backing directory.
  using Encoded = NameCodec::Encoded;

  Filesystem(UniqueFd root_fd, const struct stat& root_st, Volume* volume, DataKeySource* keys,
             const FilesystemOptions& options);

  Inode* InodeOf(fuse_ino_t ino);
  static fuse_ino_t FuseIno(Inode* inode);
  // The caller of `req` (uid, gid, pid from fuse_req_ctx) acting on `path`.
  static Requester Who(fuse_req_t req, const std::string& path);

  // Names.
  Result<format::Id128> DirIdOf(Inode* dir);
  Result<Encoded> EncryptName(Inode* parent, std::string_view name);
  // Writes the long-name side file before its entry (format.md §8.3). *created tells whether
  // this call made it (so a failed create can remove it). No-op for short names.
  Status WriteSideFile(Inode* parent, const Encoded& enc, bool* created);
  void RemoveSideFile(Inode* parent, const Encoded& enc);
  Result<std::string> DecryptEntryName(int dir_fd, const format::Id128& dir_id,
                                       std::string_view backing_name);

  // Entries.
  Result<fuse_entry_param> LookupBacking(Inode* parent, const std::string& backing_name,
                                         std::string plain_name);
  Result<struct stat> Stat(Inode* inode);
  Status FixupAttr(Inode* inode, int fd, struct stat* st);
  // New objects belong to their creator when we run as root (with setgid-directory semantics);
  // a non-root mount cannot chown and leaves them to the mounting user, as any process would.
  // `mode` is the new object's type and mode (set-id bits cleared by chown are put back).
  Status ChownNew(fuse_req_t req, Inode* parent, const std::string& backing_name, mode_t mode);
  Result<fuse_entry_param> MakeEntry(fuse_req_t req, Inode* parent, const char* name, mode_t mode,
                                     dev_t rdev, const char* symlink_target);
  // Creates a regular file (O_EXCL: kAlreadyExists if the name is taken) with a fresh header
  // and data key, and returns its open state (read-write). Nothing is left behind on failure.
  Result<std::unique_ptr<OpenFile>> CreateRegular(fuse_req_t req, Inode* parent, const char* name,
                                                  const Encoded& enc, mode_t mode);
  // rmdir's emptiness rule: a backing directory holding only kmsfs.dirid (and orphaned
  // long-name side files, removed here) is empty; kIo(ENOTEMPTY) otherwise. Unlinks the dir id
  // so the backing rmdir/rename can proceed; RestoreDirId puts it back if that fails.
  struct RemovedDirId;
  Result<RemovedDirId> PrepareRemoveDir(Inode* parent, const std::string& backing_name);
  void RestoreDirId(const RemovedDirId& removed);

  // Contents.
  Result<UniqueFd> ReopenBacking(Inode* inode, bool writable);
  // `kill_suid_gid`: an O_TRUNC open also clears set-id bits (KillSuidGid).
  Result<FileHandle*> OpenHandle(fuse_req_t req, Inode* inode, int flags,
                                 bool kill_suid_gid = false);
  // A handle of `inode` for the caller of `req`, its Grant registered for revalidation.
  // REQUIRES: the caller has just counted it in inode->open_count.
  FileHandle* NewHandle(fuse_req_t req, Inode* inode, int flags);
  // The content `h` may use: the handle's error if keyd refused its opener at the last
  // revalidation, kKeyUnavailable if the DEK is wiped. REQUIRES: inode->io_mu held (either way).
  static Result<FileContent*> ContentFor(const FileHandle& h);
  // Drops the handle's Grant (Release). REQUIRES: inode->mu held.
  void DropGrant(const FileHandle& h);
  Status Truncate(fuse_req_t req, Inode* inode, uint64_t size, fuse_file_info* fi);
  // Clears the set-user-id bit, and the set-group-id bit if the group may execute, as Linux
  // does when a caller without CAP_FSETID writes or truncates (kill_priv.h: the kernel leaves
  // that to us). With `unless_capable`, only if that process lacks CAP_FSETID (for requests on
  // which the kernel sends no flag).
  Status KillSuidGid(Inode* inode, pid_t unless_capable = 0);

  // Link tags (entry_ops.cc, format.md §6.2). OpenFileKey for an open or truncate(path) of
  // `inode`, checked against the tag of the entry it was reached through (Inode::link); ESTALE
  // if that entry is gone, so the kernel looks the path up again.
  Result<FileKey> OpenKeyVia(BackingFile* backing, Inode* inode, const Requester& who);
  // Records `link` as the entry a regular file was found under (LookupBacking).
  void SetLink(Inode* inode, LinkName link);

  // Xattrs.
  Result<format::Id128> XattrIdOf(Inode* inode);
  Status CheckXattrName(fuse_req_t req, std::string_view name, bool for_write);

  Volume* const volume_;
  DataKeySource* const keys_;
  const FilesystemOptions options_;
  const dev_t root_dev_;
  const bool as_root_;     // geteuid() == 0: chown new objects to their creator
  const bool long_names_;  // the volume has feature "long-names"
  InodeTable inodes_;
  // Every open handle's Grant, for RevalidateOpenFiles. Lock order: after Inode::mu, before
  // InodeTable::mu_.
  std::function<void()> first_open_hook_;
  std::function<void(fuse_ino_t)> attr_changed_hook_;
  std::once_flag first_open_;
  std::mutex grants_mu_;
  std::unordered_map<const Grant*, std::shared_ptr<Grant>> grants_;  // guarded by grants_mu_
  std::unordered_set<FileHandle*> handles_;  // every handle not yet released; grants_mu_
};

}  // namespace kmsfs::fs
