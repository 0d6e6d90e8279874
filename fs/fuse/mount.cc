#include "fs/fuse/mount.h"

#include <fcntl.h>
#include <linux/magic.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/log/log.h"
#include "fs/fuse/filesystem.h"
#include "fs/fuse/kill_priv.h"
#include "fs/fuse/session_loop.h"
#include "fs/fuse/sys_util.h"

namespace kmsfs::fs {
namespace {

Filesystem* Fs(fuse_req_t req) { return static_cast<Filesystem*>(fuse_req_userdata(req)); }

// The ops table: thin trampolines into Filesystem, which replies. Locks (getlk/setlk/flock)
// are not implemented, so the kernel handles them locally; copy_file_range is not either, and
// the kernel falls back to read/write.
constexpr fuse_lowlevel_ops kOps = [] {
  fuse_lowlevel_ops ops{};
  ops.init = [](void* userdata, fuse_conn_info* conn) {
    static_cast<Filesystem*>(userdata)->Init(conn);
  };
  ops.lookup = [](fuse_req_t req, fuse_ino_t parent, const char* name) {
    Fs(req)->Lookup(req, parent, name);
  };
  ops.forget = [](fuse_req_t req, fuse_ino_t ino, uint64_t n) { Fs(req)->Forget(req, ino, n); };
  ops.forget_multi = [](fuse_req_t req, size_t count, fuse_forget_data* forgets) {
    Fs(req)->ForgetMulti(req, count, forgets);
  };
  ops.getattr = [](fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
    Fs(req)->GetAttr(req, ino, fi);
  };
  ops.setattr = [](fuse_req_t req, fuse_ino_t ino, struct stat* attr, int valid,
                   fuse_file_info* fi) { Fs(req)->SetAttr(req, ino, attr, valid, fi); };
  ops.readlink = [](fuse_req_t req, fuse_ino_t ino) { Fs(req)->ReadLink(req, ino); };
  ops.mknod = [](fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, dev_t rdev) {
    Fs(req)->MkNod(req, parent, name, mode, rdev);
  };
  ops.mkdir = [](fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode) {
    Fs(req)->MkDir(req, parent, name, mode);
  };
  ops.unlink = [](fuse_req_t req, fuse_ino_t parent, const char* name) {
    Fs(req)->Unlink(req, parent, name);
  };
  ops.rmdir = [](fuse_req_t req, fuse_ino_t parent, const char* name) {
    Fs(req)->RmDir(req, parent, name);
  };
  ops.symlink = [](fuse_req_t req, const char* link, fuse_ino_t parent, const char* name) {
    Fs(req)->Symlink(req, link, parent, name);
  };
  ops.rename = [](fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t newparent,
                  const char* newname, unsigned int flags) {
    Fs(req)->Rename(req, parent, name, newparent, newname, flags);
  };
  ops.link = [](fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char* newname) {
    Fs(req)->Link(req, ino, newparent, newname);
  };
  ops.open = [](fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
    Fs(req)->Open(req, ino, fi);
  };
  ops.read = [](fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
    Fs(req)->Read(req, ino, size, off, fi);
  };
  ops.write = [](fuse_req_t req, fuse_ino_t ino, const char* buf, size_t size, off_t off,
                 fuse_file_info* fi) { Fs(req)->Write(req, ino, buf, size, off, fi); };
  ops.flush = [](fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
    Fs(req)->Flush(req, ino, fi);
  };
  ops.release = [](fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
    Fs(req)->Release(req, ino, fi);
  };
  ops.fsync = [](fuse_req_t req, fuse_ino_t ino, int datasync, fuse_file_info* fi) {
    Fs(req)->FSync(req, ino, datasync, fi);
  };
  ops.opendir = [](fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
    Fs(req)->OpenDir(req, ino, fi);
  };
  ops.readdir = [](fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
    Fs(req)->ReadDir(req, ino, size, off, fi, /*plus=*/false);
  };
  ops.readdirplus = [](fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
    Fs(req)->ReadDir(req, ino, size, off, fi, /*plus=*/true);
  };
  ops.releasedir = [](fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
    Fs(req)->ReleaseDir(req, ino, fi);
  };
  ops.fsyncdir = [](fuse_req_t req, fuse_ino_t ino, int datasync, fuse_file_info* fi) {
    Fs(req)->FSyncDir(req, ino, datasync, fi);
  };
  ops.statfs = [](fuse_req_t req, fuse_ino_t ino) { Fs(req)->StatFs(req, ino); };
  ops.setxattr = [](fuse_req_t req, fuse_ino_t ino, const char* name, const char* value,
                    size_t size,
                    int flags) { Fs(req)->SetXattr(req, ino, name, value, size, flags); };
  ops.getxattr = [](fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) {
    Fs(req)->GetXattr(req, ino, name, size);
  };
  ops.listxattr = [](fuse_req_t req, fuse_ino_t ino, size_t size) {
    Fs(req)->ListXattr(req, ino, size);
  };
  ops.removexattr = [](fuse_req_t req, fuse_ino_t ino, const char* name) {
    Fs(req)->RemoveXattr(req, ino, name);
  };
  ops.create = [](fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode,
                  fuse_file_info* fi) { Fs(req)->Create(req, parent, name, mode, fi); };
  ops.fallocate = [](fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length,
                     fuse_file_info* fi) {
    Fs(req)->FAllocate(req, ino, mode, offset, length, fi);
  };
  return ops;
}();

// libfuse's -o parser splits at ',' and treats '\' as an escape.
std::string EscapeOption(std::string_view value) {
  std::string out;
  for (char c : value) {
    if (c == ',' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  return out;
}

// "MAJ:MIN" of the file system mounted at `mountpoint` (the last such line of
// /proc/self/mountinfo), or "" if none. Mount points with spaces are octal-escaped there.
std::string MountDevice(const std::string& mountpoint) {
  std::string escaped;
  for (char c : mountpoint) {
    if (c == ' ' || c == '\t' || c == '\n' || c == '\\') {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\%03o", static_cast<unsigned char>(c));
      escaped += buf;
    } else {
      escaped.push_back(c);
    }
  }
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  std::string found;
  while (std::getline(in, line)) {
    // id parent MAJ:MIN root mountpoint ...
    std::istringstream fields(line);
    std::string id, parent, dev, root, point;
    if (fields >> id >> parent >> dev >> root >> point && point == escaped) found = dev;
  }
  return found;
}

}  // namespace

struct FuseMount::Impl {
  ~Impl() {
    if (session != nullptr) {
      if (signals_installed) fuse_remove_signal_handlers(session);
      if (mounted) fuse_session_unmount(session);
      fuse_session_destroy(session);
    }
  }
  std::unique_ptr<Filesystem> fs;
  fuse_session* session = nullptr;
  bool mounted = false;
  bool signals_installed = false;
  FuseMountOptions options;

  // The revalidation thread: every key_revalidate, RevalidateOpenFiles, then drop the kernel's
  // cached pages of every inode that just lost access. notify_inval_inode is called from here,
  // never from a request handler, and with no lock held: the kernel may need our workers to
  // write dirty mmap pages back while it invalidates.
  // The kernel reads ahead 128 KiB on a FUSE mount by default, so a sequential read arrives as
  // 128 KiB requests whatever max_read says; 1 MiB requests cost a quarter of the round trips
  // (measured: 1.45x sequential read throughput, docs/filesystem.md). Only root may write the
  // bdi's sysfs knob; elsewhere this is a no-op with a debug line. Called on the first open:
  // INIT's reply sets the read-ahead to min(current, max_readahead) and would undo an earlier
  // raise, and no open arrives before that reply has been processed.
  void RaiseReadAhead() const {
    if (bdi.empty()) return;
    const std::string knob = "/sys/class/bdi/" + bdi + "/read_ahead_kb";
    const std::string value = std::to_string(options.read_ahead_kb);
    UniqueFd fd(::open(knob.c_str(), O_WRONLY | O_CLOEXEC));
    if (!fd ||
        ::write(fd.get(), value.data(), value.size()) != static_cast<ssize_t>(value.size())) {
      log::Get("fs.fuse")->debug("read-ahead stays at the kernel's default: {}: {}", knob,
                                 std::strerror(errno));
    }
  }
  std::string bdi;  // "MAJ:MIN" of the mount, from /proc/self/mountinfo; "" if not found
  // The cipher directory is on tmpfs or ramfs: syncs cost nothing (SessionLoop, RunsInline).
  bool sync_is_free = false;

  void RunRevalidation() {
    std::unique_lock lock(stop_mu);
    while (!stop_cv.wait_for(lock, options.key_revalidate, [this] { return stop; })) {
      lock.unlock();
      for (fuse_ino_t ino : fs->RevalidateOpenFiles()) {
        // -ENOENT when the kernel has already forgotten the inode: nothing cached then.
        (void)fuse_lowlevel_notify_inval_inode(session, ino, 0, 0);
      }
      lock.lock();
    }
  }
  std::mutex stop_mu;
  std::condition_variable stop_cv;
  bool stop = false;  // guarded by stop_mu
};

FuseMount::FuseMount(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
FuseMount::~FuseMount() = default;

Result<std::unique_ptr<FuseMount>> FuseMount::Mount(Volume* volume, DataKeySource* keys,
                                                    const FuseMountOptions& options) {
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  UniqueFd root(::open(options.cipherdir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!root) return SysError("open cipher directory", errno);
  struct statfs backing_fs;
  impl->sync_is_free =
      ::fstatfs(root.get(), &backing_fs) == 0 &&
      (backing_fs.f_type == TMPFS_MAGIC || backing_fs.f_type == RAMFS_MAGIC);
  FilesystemOptions fs_options;
  fs_options.timeout = options.timeout;
  fs_options.key_revalidate = options.key_revalidate;
  KMSFS_ASSIGN_OR_RETURN(impl->fs, Filesystem::Create(std::move(root), volume, keys, fs_options));

  std::string opts = "default_permissions,subtype=kmsfs,fsname=" + EscapeOption(options.cipherdir) +
                     ",max_read=1048576";
  for (const auto& o : options.fuse_options) {
    opts += ',';
    opts += o;  // already split by the caller; commas inside values arrive escaped
  }
  std::vector<std::string> argv_store = {"kmsfs", "-o", opts};
  if (options.debug) argv_store.push_back("-d");
  std::vector<char*> argv;
  argv.reserve(argv_store.size());
  for (auto& a : argv_store) argv.push_back(a.data());
  fuse_args args = FUSE_ARGS_INIT(static_cast<int>(argv.size()), argv.data());
  impl->session = fuse_session_new(&args, &kOps, sizeof(kOps), impl->fs.get());
  fuse_opt_free_args(&args);  // the parser may have copied them; ours stay in argv_store
  if (impl->session == nullptr) {
    return Error(Code::kInvalidArgument, "libfuse rejected the mount options (see above)");
  }
  if (fuse_session_mount(impl->session, options.mountpoint.c_str()) != 0) {
    return Error(Code::kIo, "mounting on the mount point failed (see above)", EIO);
  }
  impl->mounted = true;
  // Plain read(2)/writev(2) on the device, plus the INIT amendment of kill_priv.h.
  const fuse_custom_io io{.writev = DeviceWritev, .read = DeviceRead, .splice_receive = nullptr,
                          .splice_send = nullptr};
  if (fuse_session_custom_io(impl->session, &io, fuse_session_fd(impl->session)) != 0) {
    return Error(Code::kInternal, "cannot install the FUSE device I/O");
  }
  if (options.read_ahead_kb > 0) {
    // Found without touching the mount: a stat would wait for INIT, which nobody serves yet.
    impl->bdi = MountDevice(options.mountpoint);
    Impl* raw = impl.get();
    impl->fs->SetFirstOpenHook([raw] { raw->RaiseReadAhead(); });
  }
  fuse_session* session = impl->session;
  impl->fs->SetAttrChangedHook([session](fuse_ino_t ino) {
    // Attributes only (no page range): takes no page lock, so it is safe inside a request.
    // -ENOENT when the kernel has forgotten the inode: nothing cached then.
    (void)fuse_lowlevel_notify_inval_inode(session, ino, -1, 0);
  });
  if (fuse_set_signal_handlers(impl->session) != 0) {
    return Error(Code::kInternal, "cannot install signal handlers");
  }
  impl->signals_installed = true;
  return std::unique_ptr<FuseMount>(new FuseMount(std::move(impl)));
}

Status FuseMount::Serve() {
  // One reader thread (this one: libfuse's signal handlers interrupt its read) and up to
  // max_threads - 1 workers for the requests that may block; see session_loop.h for why not
  // fuse_session_loop_mt.
  const unsigned threads = impl_->options.max_threads;
  SessionLoop loop(impl_->session, threads > 1 ? threads - 1 : 1, impl_->sync_is_free);
  std::thread revalidator;
  if (impl_->options.key_revalidate.count() > 0) {
    revalidator = SessionLoop::StartQuietThread([this] { impl_->RunRevalidation(); });
  }
  const int rc = loop.Run();
  if (revalidator.joinable()) {
    {
      std::lock_guard lock(impl_->stop_mu);
      impl_->stop = true;
    }
    impl_->stop_cv.notify_all();
    revalidator.join();
  }
  fuse_remove_signal_handlers(impl_->session);
  impl_->signals_installed = false;
  // After a signal the mount is still there: take it down now (a no-op after fusermount3 -u).
  fuse_session_unmount(impl_->session);
  impl_->mounted = false;
  // rc is 0 after an unmount or a signal (a requested, clean stop).
  if (rc < 0) return Error(Code::kIo, "the FUSE session loop failed", -rc);
  return Status::Ok();
}

}  // namespace kmsfs::fs
