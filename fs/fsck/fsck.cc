// Fsck over a cipher directory: config, then a depth-first walk of the backing tree.
//
// The walk needs only the backing tree and the keys: names are checked against their parent's
// kmsfs.dirid, contents against their header's DEK. It never follows symlinks, never leaves the
// backing file system, and visits each inode once (hard links, entries moved to lost+found).
#include "fs/fsck/fsck.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <fstream>
#include <memory>
#include <set>
#include <sstream>
#include <utility>

#include "common/base/bytes.h"
#include "common/base/unique_fd.h"
#include "common/crypto/secret.h"
#include "common/format/encryption_context.h"
#include "common/format/file_header.h"
#include "common/format/name_encoding.h"
#include "common/format/volume_config.h"
#include "fs/core/dir_id.h"
#include "fs/core/mountinfo.h"
#include "fs/core/name_codec.h"
#include "fs/core/posix_backing_file.h"
#include "fs/core/small_file.h"
#include "fs/core/volume.h"
#include "fs/fsck/content_check.h"

namespace kmsfs::fs::fsck {
namespace {

// The plaintext name of the directory in the volume's root that receives entries whose names do
// not decrypt (as e2fsck's lost+found).
constexpr std::string_view kLostFound = "lost+found";

// Leftovers of WriteNewFileAtomically (fs/core/small_file.h) interrupted by a crash.
bool IsAtomicWriteLeftover(std::string_view name) {
  return name == "kmsfs.conf.tmp" || name == "kmsfs.dirid.tmp";
}

// Where an object is: its plaintext path when every name on the way decrypted, and always its
// backing path relative to the cipher directory.
struct Where {
  std::optional<std::string> plain;
  std::string backing;  // "" for the root

  std::string Shown() const {
    if (plain) return plain->empty() ? "/" : *plain;
    return "backing:" + (backing.empty() ? std::string(".") : backing);
  }
  Where Child(std::string_view backing_name, const std::optional<std::string>& plain_name) const {
    Where w;
    if (plain && plain_name) w.plain = *plain + "/" + *plain_name;
    w.backing =
        backing.empty() ? std::string(backing_name) : backing + "/" + std::string(backing_name);
    return w;
  }
};

std::vector<std::string> ListDir(int dirfd, int* err) {
  std::vector<std::string> names;
  *err = 0;
  const int dup = ::openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dup < 0) {
    *err = errno;
    return names;
  }
  DIR* dir = ::fdopendir(dup);
  if (dir == nullptr) {
    *err = errno;
    ::close(dup);
    return names;
  }
  errno = 0;
  while (const struct dirent* e = ::readdir(dir)) {  // NOLINT(concurrency-mt-unsafe): our stream
    const std::string_view n = e->d_name;
    if (n != "." && n != "..") names.emplace_back(n);
    errno = 0;
  }
  if (errno != 0) *err = errno;
  ::closedir(dir);
  std::sort(names.begin(), names.end());
  return names;
}

class Walker {
 public:
  Walker(std::string cipherdir, DataKeySource* keys, const Options& options)
      : cipherdir_(std::move(cipherdir)), keys_(keys), options_(options) {
    report_.repair = options.repair;
  }

  Result<Report> Run();

 private:
  void Add(const Where& where, std::string problem, std::string action, Finding::State state,
           std::optional<uint64_t> first = std::nullopt,
           std::optional<uint64_t> last = std::nullopt) {
    Finding f;
    f.path = where.Shown();
    f.problem = std::move(problem);
    f.action = std::move(action);
    f.state = state;
    f.first_block = first;
    f.last_block = last;
    report_.findings.push_back(std::move(f));
  }
  // A problem --repair leaves alone.
  void AddUnrepairable(const Where& where, std::string problem, std::string why) {
    Add(where, std::move(problem), options_.repair ? std::move(why) : "",
        options_.repair ? Finding::State::kUnrepairable : Finding::State::kFound);
  }
  // A problem --repair fixes with `how` (a Status of that attempt when repairing).
  void AddRepairable(const Where& where, std::string problem, const std::string& how,
                     const Status& attempt) {
    if (!options_.repair) {
      Add(where, std::move(problem), "", Finding::State::kFound);
    } else if (attempt.ok()) {
      Add(where, std::move(problem), how, Finding::State::kRepaired);
    } else {
      Add(where, std::move(problem), "repair failed: " + attempt.error().message(),
          Finding::State::kUnrepairable);
    }
  }
  void NotChecked(const Where& where, const std::string& why) {
    report_.not_checked.push_back(where.Shown() + ": " + why);
  }
  bool FirstVisit(const struct stat& st) { return visited_.insert({st.st_dev, st.st_ino}).second; }

  Status OpenVolume(int root_fd);
  Status WalkDir(int dirfd, const Where& where, bool is_root);
  Status CheckEntry(int dirfd, const format::Id128& dir_id, const Where& parent,
                    const std::string& name, bool is_root);
  Status CheckObject(int dirfd, const format::Id128& dir_id, const std::string& name,
                     const Where& where);
  // Header-links volumes: the file's header must hold the link tag of this entry.
  void CheckLink(int dirfd, const format::Id128& dir_id, const std::string& name,
                 const Where& where);
  Status CheckFile(int dirfd, const std::string& name, const Where& where);
  void CheckSymlink(int dirfd, const std::string& name, const Where& where);
  void CheckXattrs(int fd, const format::Id128& id, const Where& where);
  struct Moved {
    std::string plain;         // "#<inode>" in /lost+found
    std::string backing_name;  // its backing name there
    std::string backing;       // its backing path relative to the cipher directory
  };
  Result<Moved> MoveToLostFound(int dirfd, const format::Id128& dir_id, const std::string& name,
                                const struct stat& st);
  // Header-links volumes (format.md §6.2): makes the file `name` in `dirfd` linked under
  // (link_dir, link_name) in addition to, or instead of (`remove`), what it holds. A file whose
  // header does not parse is left alone (it cannot be opened anyway).
  Status Relink(int dirfd, const std::string& name, const format::Id128& link_dir,
                const std::string& link_name, bool remove);
  Result<int> LostFoundFd();

  const std::string cipherdir_;
  DataKeySource* const keys_;
  const Options options_;
  Report report_;
  format::VolumeConfig config_;
  std::unique_ptr<NameCodec> names_;
  format::Id128 root_dir_id_{};
  UniqueFd root_fd_;
  dev_t root_dev_ = 0;
  UniqueFd lost_found_fd_;
  std::string lost_found_backing_;  // its backing name in the root
  std::set<std::pair<dev_t, ino_t>> visited_;
};

Status Walker::OpenVolume(int root_fd) {
  Where conf;
  conf.plain = "";
  conf.backing = std::string(format::kVolumeConfigName);
  auto config = Volume::ReadConfigUnverified(cipherdir_);
  if (!config.ok()) {
    if (config.error().code() != Code::kCorrupt) return config.error();
    Add(conf, "volume config: " + config.error().message(),
        options_.repair ? "not repaired: restore kmsfs.conf from a backup" : "",
        options_.repair ? Finding::State::kUnrepairable : Finding::State::kFound);
    return Error(Code::kCorrupt, "stop");
  }
  config_ = std::move(config).value();
  report_.volume_id = HexEncode(config_.volume_id);
  // Mount order of format.md §5: the name key first (its blob is bound to VolumeId), then the
  // MAC. A MAC mismatch is reported, but the walk goes on: names, headers and blocks do not
  // depend on the fields the MAC alone protects (KeyId, CreatedAt, Features).
  Requester who = options_.who;
  auto name_key =
      keys_->Decrypt(config_.name_key_blob, format::NameKeyContext(config_.volume_id), who);
  if (!name_key.ok()) {
    if (name_key.error().code() != Code::kCorrupt && name_key.error().code() != Code::kNotFound) {
      return name_key.error();
    }
    Add(conf,
        "volume config: the name key does not unwrap (VolumeId or NameKeyBlob edited): " +
            name_key.error().message(),
        options_.repair ? "not repaired: restore kmsfs.conf from a backup" : "",
        options_.repair ? Finding::State::kUnrepairable : Finding::State::kFound);
    return Error(Code::kCorrupt, "stop");
  }
  if (name_key->size() != 32) return Error(Code::kInternal, "volume name key is not 32 bytes");
  KMSFS_ASSIGN_OR_RETURN(
      names_, NameCodec::Create(*name_key, config_.HasFeature(format::kFeatureLongNames)));
  KMSFS_ASSIGN_OR_RETURN(Bytes mac_input, format::VolumeConfigMacInput(config_));
  if (!crypto::ConstantTimeEqual(names_->ConfigMac(mac_input), config_.mac)) {
    AddUnrepairable(conf,
                    "volume config was modified (MAC mismatch): KeyId, BlockSize, Features or "
                    "CreatedAt cannot be trusted",
                    "not repaired: restore kmsfs.conf from a backup (re-signing would accept "
                    "the edit)");
  }
  auto root_id = ReadDirId(root_fd);
  if (!root_id.ok()) {
    if (root_id.error().code() != Code::kCorrupt) return root_id.error();
    Where dirid;
    dirid.plain = "";
    dirid.backing = std::string(format::kDirIdName);
    AddUnrepairable(dirid, "root directory id: " + root_id.error().message(),
                    "not repaired: no name in the volume can be decrypted without it");
    return Error(Code::kCorrupt, "stop");
  }
  root_dir_id_ = *root_id;
  return Status::Ok();
}

Result<Report> Walker::Run() {
  root_fd_.Reset(::open(cipherdir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!root_fd_) {
    if (errno == ENOENT) return Error(Code::kNotFound, "cipher directory does not exist", ENOENT);
    return Error::FromErrno("open cipher directory", errno);
  }
  struct stat st;
  if (::fstat(root_fd_.get(), &st) != 0) return Error::FromErrno("stat cipher directory", errno);
  root_dev_ = st.st_dev;
  visited_.insert({st.st_dev, st.st_ino});
  Status opened = OpenVolume(root_fd_.get());
  if (!opened.ok()) {
    if (opened.code() == Code::kCorrupt && opened.error().message() == "stop") return report_;
    return opened.error();
  }
  Where root;
  root.plain = "";
  KMSFS_RETURN_IF_ERROR(WalkDir(root_fd_.get(), root, /*is_root=*/true));
  return report_;
}

Status Walker::WalkDir(int dirfd, const Where& where, bool is_root) {
  ++report_.directories;
  auto dir_id = ReadDirId(dirfd);
  if (!dir_id.ok()) {
    if (dir_id.error().code() != Code::kCorrupt) {
      NotChecked(where, dir_id.error().message());
      return Status::Ok();
    }
    AddUnrepairable(where,
                    "directory id (kmsfs.dirid): " + dir_id.error().message() +
                        ": no name inside can be decrypted",
                    "not repaired: the directory is left as it is");
    return Status::Ok();
  }
  CheckXattrs(dirfd, *dir_id, where);
  int err = 0;
  const std::vector<std::string> entries = ListDir(dirfd, &err);
  if (err != 0) NotChecked(where, "readdir: " + std::string(std::strerror(err)));
  for (const std::string& name : entries) {
    KMSFS_RETURN_IF_ERROR(CheckEntry(dirfd, *dir_id, where, name, is_root));
  }
  return Status::Ok();
}

Status Walker::CheckEntry(int dirfd, const format::Id128& dir_id, const Where& parent,
                          const std::string& name, bool is_root) {
  if (name == format::kDirIdName) return Status::Ok();
  if (is_root && name == format::kVolumeConfigName) return Status::Ok();
  const Where raw = parent.Child(name, std::nullopt);
  if (format::IsLongNameSideFile(name)) {
    const std::string entry = name.substr(0, name.size() - format::kLongNameSideSuffix.size());
    struct stat st;
    if (::fstatat(dirfd, entry.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) return Status::Ok();
    Status attempt;
    if (options_.repair && ::unlinkat(dirfd, name.c_str(), 0) != 0) {
      attempt = Error::FromErrno("unlink", errno);
    }
    AddRepairable(raw, "long-name side file without its entry (left by a crash)", "removed",
                  attempt);
    return Status::Ok();
  }
  if (format::IsReservedBackingName(name) && !name.starts_with(format::kLongNamePrefix)) {
    if (IsAtomicWriteLeftover(name)) {
      Status attempt;
      if (options_.repair && ::unlinkat(dirfd, name.c_str(), 0) != 0) {
        attempt = Error::FromErrno("unlink", errno);
      }
      AddRepairable(raw, "leftover of an interrupted atomic write", "removed", attempt);
    } else {
      AddUnrepairable(raw, "unknown file in kmsfs's reserved namespace (kmsfs.*)",
                      "not repaired: left for you to inspect (the mount ignores it)");
    }
    return Status::Ok();
  }

  struct stat st;
  if (::fstatat(dirfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    NotChecked(raw, "stat: " + std::string(std::strerror(errno)));
    return Status::Ok();
  }
  if (st.st_dev != root_dev_) {
    AddUnrepairable(raw, "another file system is mounted inside the backing directory",
                    "not repaired: the mount does not serve it; unmount it");
    return Status::Ok();
  }

  std::string long_content;
  Status name_status;
  if (name.starts_with(format::kLongNamePrefix)) {
    const std::string side = format::LongNameSideFile(name);
    auto content = ReadSmallFile(dirfd, side, 1024);
    if (content.ok()) {
      long_content.assign(content->begin(), content->end());
    } else {
      name_status = Error(Code::kCorrupt, "long name whose side file is missing or unreadable");
    }
  }
  std::optional<std::string> plain;
  if (name_status.ok()) {
    auto decrypted = names_->DecryptName(dir_id, name, long_content);
    if (decrypted.ok()) {
      plain = std::move(decrypted).value();
    } else {
      name_status = decrypted.error();
    }
  }
  if (plain) return CheckObject(dirfd, dir_id, name, parent.Child(name, plain));

  // The name does not decrypt: --repair moves the entry into /lost+found as "#<inode>", where
  // its contents (which do not depend on the name) can be read through the mount.
  const std::string problem = "name does not decrypt (an entry of " + parent.Shown() +
                              "): " + name_status.error().message();
  if (!options_.repair) {
    Add(raw, problem, "", Finding::State::kFound);
    return CheckObject(dirfd, dir_id, name, raw);
  }
  auto moved = MoveToLostFound(dirfd, dir_id, name, st);
  if (!moved.ok()) {
    Add(raw, problem, "could not move it to /lost+found: " + moved.error().message(),
        Finding::State::kUnrepairable);
    return CheckObject(dirfd, dir_id, name, raw);
  }
  Add(raw, problem, "moved to /" + std::string(kLostFound) + "/" + moved->plain,
      Finding::State::kRepaired);
  Where now;
  now.plain = "/" + std::string(kLostFound) + "/" + moved->plain;
  now.backing = moved->backing;
  KMSFS_ASSIGN_OR_RETURN(format::Id128 lf_id, ReadDirId(lost_found_fd_.get()));
  return CheckObject(lost_found_fd_.get(), lf_id, moved->backing_name, now);
}

void Walker::CheckLink(int dirfd, const format::Id128& dir_id, const std::string& name,
                       const Where& where) {
  UniqueFd fd(::openat(dirfd, name.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd) return;
  PosixBackingFile backing(std::move(fd));
  Bytes page(format::FileHeader::kSize);
  auto got = backing.PRead(page, 0);
  if (!got.ok() || *got != page.size()) return;  // CheckFile reports the header
  auto header = format::ParseFileHeader(page);
  if (!header.ok()) return;
  auto input = format::LinkMacInput(config_.volume_id, header->file_id, dir_id, name);
  if (!input.ok() || header->HasLink(names_->LinkTag(*input))) return;
  AddUnrepairable(where,
                  "not linked under this name: the file's header does not name this entry (a "
                  "whole file copied or moved over another, format.md §6.2); it reads as EIO",
                  "not repaired: left in place (its contents belong to another file); remove "
                  "it through the mount");
}

Status Walker::CheckObject(int dirfd, const format::Id128& dir_id, const std::string& name,
                           const Where& where) {
  struct stat st;
  if (::fstatat(dirfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    NotChecked(where, "stat: " + std::string(std::strerror(errno)));
    return Status::Ok();
  }
  if (S_ISREG(st.st_mode) && config_.HasFeature(format::kFeatureHeaderLinks)) {
    CheckLink(dirfd, dir_id, name, where);  // per entry: every hard link has its own tag
  }
  if (!FirstVisit(st)) return Status::Ok();  // a hard link, or already checked in lost+found
  if (S_ISDIR(st.st_mode)) {
    UniqueFd fd(::openat(dirfd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!fd) {
      NotChecked(where, "open: " + std::string(std::strerror(errno)));
      return Status::Ok();
    }
    return WalkDir(fd.get(), where, /*is_root=*/false);
  }
  if (S_ISREG(st.st_mode)) return CheckFile(dirfd, name, where);
  if (S_ISLNK(st.st_mode)) {
    CheckSymlink(dirfd, name, where);
    return Status::Ok();
  }
  ++report_.special_files;  // fifos, sockets, devices: nothing encrypted to check
  return Status::Ok();
}

Status Walker::CheckFile(int dirfd, const std::string& name, const Where& where) {
  ++report_.files;
  const int flags = (options_.repair ? O_RDWR : O_RDONLY) | O_NOFOLLOW | O_CLOEXEC;
  UniqueFd fd(::openat(dirfd, name.c_str(), flags));
  if (!fd) {
    NotChecked(where, "open: " + std::string(std::strerror(errno)));
    return Status::Ok();
  }
  struct stat before;
  if (::fstat(fd.get(), &before) != 0) return Error::FromErrno("fstat", errno);
  PosixBackingFile backing(std::move(fd));
  const int raw_fd = backing.fd();

  Bytes page(format::FileHeader::kSize);
  KMSFS_ASSIGN_OR_RETURN(size_t got, backing.PRead(page, 0));
  if (got != page.size()) {
    AddUnrepairable(where,
                    "file header: the backing file is " + std::to_string(got) +
                        " bytes, shorter than its header (a create that never finished, or a "
                        "truncation): the file's key is lost",
                    "not repaired: left in place; remove it through the mount");
    return Status::Ok();
  }
  auto header = format::ParseFileHeader(page);
  if (!header.ok()) {
    AddUnrepairable(where, "file header is malformed: " + header.error().message(),
                    "not repaired: the file's key is lost; left in place, remove it through "
                    "the mount");
    return Status::Ok();
  }
  CheckXattrs(raw_fd, header->file_id, where);
  Requester who = options_.who;
  who.path = where.plain.value_or("");
  auto dek = keys_->Decrypt(header->wrapped_dek,
                            format::FileDekContext(config_.volume_id, header->file_id), who);
  if (!dek.ok()) {
    const Code code = dek.error().code();
    if (code == Code::kCorrupt || code == Code::kNotFound) {
      AddUnrepairable(where,
                      "file header: the file's key does not unwrap (header edited, or from "
                      "another file or volume): " +
                          dek.error().message(),
                      "not repaired: the file's key is lost; left in place, remove it through "
                      "the mount");
      return Status::Ok();
    }
    if (code == Code::kPermissionDenied || code == Code::kKeyUnavailable) {
      NotChecked(where, "keyd refused the file's key: " + dek.error().message());
      return Status::Ok();
    }
    return dek.error();  // keyd gone: stop, the rest could not be checked either
  }
  if (dek->size() != 32)
    return Error(Code::kInternal, "key source returned a key that is not 32 bytes");
  KMSFS_ASSIGN_OR_RETURN(ContentReport content, CheckContent(config_.volume_id, header->file_id,
                                                             *dek, &backing, options_.repair));
  report_.blocks += content.blocks_checked;
  bool wrote = false;
  for (ContentIssue& issue : content.issues) {
    Finding::State state = Finding::State::kFound;
    if (options_.repair) {
      state = issue.repairable ? Finding::State::kRepaired : Finding::State::kUnrepairable;
      wrote = wrote || issue.repairable;
    }
    Add(where, std::move(issue.problem), std::move(issue.action), state, issue.first_block,
        issue.last_block);
  }
  if (wrote) {
    // A repair is not a user's write: keep the file's times as they were (ctime moves anyway).
    const struct timespec times[2] = {before.st_atim, before.st_mtim};
    (void)::futimens(raw_fd, times);
  }
  return Status::Ok();
}

void Walker::CheckSymlink(int dirfd, const std::string& name, const Where& where) {
  ++report_.symlinks;
  char buf[PATH_MAX + 1];
  const ssize_t n = ::readlinkat(dirfd, name.c_str(), buf, sizeof(buf));
  if (n < 0) {
    NotChecked(where, "readlink: " + std::string(std::strerror(errno)));
    return;
  }
  auto target = names_->DecryptSymlink(std::string_view(buf, static_cast<size_t>(n)));
  if (target.ok()) {
    crypto::Wipe(*target);
    return;
  }
  AddUnrepairable(where, "symlink target does not decrypt: " + target.error().message(),
                  "not repaired: the target is lost; left in place, remove it through the "
                  "mount");
}

void Walker::CheckXattrs(int fd, const format::Id128& id, const Where& where) {
  std::string list;
  for (;;) {
    const ssize_t n = ::flistxattr(fd, nullptr, 0);
    if (n <= 0) return;  // none, or the backing fs has no xattrs (ENOTSUP)
    list.resize(static_cast<size_t>(n));
    const ssize_t m = ::flistxattr(fd, list.data(), list.size());
    if (m >= 0) {
      list.resize(static_cast<size_t>(m));
      break;
    }
    if (errno != ERANGE) return;
  }
  for (size_t pos = 0; pos < list.size();) {
    const size_t end = list.find('\0', pos);
    const std::string attr = list.substr(pos, end == std::string::npos ? end : end - pos);
    pos = end == std::string::npos ? list.size() : end + 1;
    // The namespaces kmsfs encrypts (fs/fuse/xattr_ops.cc); security.* and system.* are the
    // backing file system's own labels and ACLs.
    if (!attr.starts_with("user.") && !attr.starts_with("trusted.")) continue;
    ++report_.xattrs;
    Bytes value;
    const ssize_t n = ::fgetxattr(fd, attr.c_str(), nullptr, 0);
    if (n >= 0) {
      value.resize(static_cast<size_t>(n));
      const ssize_t m = ::fgetxattr(fd, attr.c_str(), value.data(), value.size());
      if (m >= 0) value.resize(static_cast<size_t>(m));
    }
    auto plain = names_->DecryptXattr(id, attr, value);
    if (plain.ok()) {
      crypto::Wipe(*plain);
      continue;
    }
    Status attempt;
    if (options_.repair && ::fremovexattr(fd, attr.c_str()) != 0) {
      attempt = Error::FromErrno("removexattr", errno);
    }
    AddRepairable(where, "extended attribute " + attr + " does not decrypt", "removed", attempt);
  }
}

Result<int> Walker::LostFoundFd() {
  if (lost_found_fd_) return lost_found_fd_.get();
  KMSFS_ASSIGN_OR_RETURN(NameCodec::Encoded enc, names_->EncryptName(root_dir_id_, kLostFound));
  lost_found_backing_ = enc.backing_name;
  const int root = root_fd_.get();
  struct stat st;
  if (::fstatat(root, enc.backing_name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) {
    if (!S_ISDIR(st.st_mode)) {
      return Error(Code::kFailedPrecondition, "/lost+found exists and is not a directory");
    }
    lost_found_fd_.Reset(
        ::openat(root, enc.backing_name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!lost_found_fd_) return Error::FromErrno("open lost+found", errno);
    KMSFS_RETURN_IF_ERROR(ReadDirId(lost_found_fd_.get()).status());
    return lost_found_fd_.get();
  }
  if (errno != ENOENT) return Error::FromErrno("stat lost+found", errno);
  if (::mkdirat(root, enc.backing_name.c_str(), 0700) != 0) {
    return Error::FromErrno("mkdir lost+found", errno);
  }
  lost_found_fd_.Reset(
      ::openat(root, enc.backing_name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!lost_found_fd_) return Error::FromErrno("open lost+found", errno);
  // The id before any entry (format.md §8.1), then the entry made durable in the root.
  KMSFS_RETURN_IF_ERROR(CreateDirId(lost_found_fd_.get()).status());
  KMSFS_RETURN_IF_ERROR(SyncDirectory(root));
  if (::fstat(lost_found_fd_.get(), &st) == 0) visited_.insert({st.st_dev, st.st_ino});
  ++report_.directories;
  return lost_found_fd_.get();
}

Status Walker::Relink(int dirfd, const std::string& name, const format::Id128& link_dir,
                      const std::string& link_name, bool remove) {
  UniqueFd fd(::openat(dirfd, name.c_str(), O_RDWR | O_NOFOLLOW | O_CLOEXEC));
  if (!fd) return Error::FromErrno("open for relink", errno);
  PosixBackingFile backing(std::move(fd));
  Bytes page(format::FileHeader::kSize);
  KMSFS_ASSIGN_OR_RETURN(size_t got, backing.PRead(page, 0));
  if (got != page.size()) return Status::Ok();
  auto header = format::ParseFileHeader(page);
  if (!header.ok()) return Status::Ok();
  KMSFS_ASSIGN_OR_RETURN(
      Bytes input, format::LinkMacInput(config_.volume_id, header->file_id, link_dir, link_name));
  const format::LinkTag tag = names_->LinkTag(input);
  std::vector<format::LinkTag> links;
  for (const auto& t : header->links) {
    if (!(remove && t == tag)) links.push_back(t);
  }
  if (!remove) links.push_back(tag);
  if (links == header->links) return Status::Ok();
  KMSFS_ASSIGN_OR_RETURN(format::LinksWrite write,
                         format::PrepareLinksWrite(*header, std::move(links)));
  KMSFS_RETURN_IF_ERROR(backing.PWrite(write.bytes, write.offset));
  return backing.Sync(/*data_only=*/true);
}

Result<Walker::Moved> Walker::MoveToLostFound(int dirfd, const format::Id128& dir_id,
                                              const std::string& name, const struct stat& st) {
  KMSFS_ASSIGN_OR_RETURN(int lf, LostFoundFd());
  KMSFS_ASSIGN_OR_RETURN(format::Id128 lf_id, ReadDirId(lf));
  const bool links = S_ISREG(st.st_mode) && config_.HasFeature(format::kFeatureHeaderLinks);
  // e2fsck's convention: "#<inode>", with a suffix should that name be taken.
  const std::string base = "#" + std::to_string(st.st_ino);
  for (int attempt = 0; attempt < 1000; ++attempt) {
    const std::string plain = attempt == 0 ? base : base + "." + std::to_string(attempt);
    KMSFS_ASSIGN_OR_RETURN(NameCodec::Encoded enc, names_->EncryptName(lf_id, plain));
    struct stat taken;
    if (::fstatat(lf, enc.backing_name.c_str(), &taken, AT_SYMLINK_NOFOLLOW) == 0) continue;
    // As the fs renames (format.md §6.2): the new link first and durable, then the entry, then
    // the old link dropped.
    if (links) KMSFS_RETURN_IF_ERROR(Relink(dirfd, name, lf_id, enc.backing_name, false));
    if (::renameat2(dirfd, name.c_str(), lf, enc.backing_name.c_str(), RENAME_NOREPLACE) != 0) {
      if (errno == EEXIST) continue;
      return Error::FromErrno("rename into lost+found", errno);
    }
    if (name.starts_with(format::kLongNamePrefix)) {
      // The entry's side file (if any) names nothing now.
      ::unlinkat(dirfd, format::LongNameSideFile(name).c_str(), 0);
    }
    KMSFS_RETURN_IF_ERROR(SyncDirectory(lf));
    KMSFS_RETURN_IF_ERROR(SyncDirectory(dirfd));
    if (links) KMSFS_RETURN_IF_ERROR(Relink(lf, enc.backing_name, dir_id, name, true));
    return Moved{plain, enc.backing_name, lost_found_backing_ + "/" + enc.backing_name};
  }
  return Error(Code::kAlreadyExists, "no free name in lost+found");
}

}  // namespace

std::optional<std::string> FindKmsfsMount(std::string_view mountinfo,
                                          const std::string& cipherdir) {
  std::istringstream in{std::string(mountinfo)};
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::vector<std::string> f;
    std::string w;
    while (fields >> w) f.push_back(w);
    // id parent major:minor root mount-point options [optional...] - fstype source super-options
    const auto dash = std::find(f.begin(), f.end(), "-");
    if (f.size() < 5 || dash == f.end() || f.end() - dash < 3) continue;
    const std::string& fstype = *(dash + 1);
    if (fstype != "fuse.kmsfs") continue;
    if (UnescapeMountinfo(*(dash + 2)) == cipherdir) return UnescapeMountinfo(f[4]);
  }
  return std::nullopt;
}

int Report::ExitCode() const {
  int code = kExitClean;
  for (const Finding& f : findings) {
    code |= f.state == Finding::State::kRepaired ? kExitCorrected : kExitUncorrected;
  }
  if (!not_checked.empty()) code |= kExitOperational;
  return code;
}

std::string Report::Format() const {
  std::ostringstream out;
  for (const Finding& f : findings) {
    out << f.path << ": " << f.problem;
    if (!f.action.empty()) out << " -- " << f.action;
    out << "\n";
  }
  for (const std::string& n : not_checked) out << "not checked: " << n << "\n";
  size_t repaired = 0;
  for (const Finding& f : findings) repaired += f.state == Finding::State::kRepaired ? 1 : 0;
  out << "volume " << (volume_id.empty() ? std::string("?") : volume_id) << ": " << directories
      << " directories, " << files << " files, " << symlinks << " symlinks, " << special_files
      << " special files, " << blocks << " blocks, " << xattrs << " xattrs checked; "
      << findings.size() << " problems";
  if (repair) out << ", " << repaired << " repaired, " << findings.size() - repaired << " left";
  if (!not_checked.empty()) out << "; " << not_checked.size() << " not checked";
  out << "\n";
  return out.str();
}

Result<Report> RunFsck(const std::string& cipherdir, DataKeySource* keys, const Options& options) {
  char* resolved = ::realpath(cipherdir.c_str(), nullptr);
  if (resolved == nullptr) {
    if (errno == ENOENT) return Error(Code::kNotFound, "cipher directory does not exist", ENOENT);
    return Error::FromErrno("cipher directory", errno);
  }
  const std::string canonical(resolved);
  ::free(resolved);
  std::ifstream in("/proc/self/mountinfo");
  std::stringstream mountinfo;
  mountinfo << in.rdbuf();
  if (auto at = FindKmsfsMount(mountinfo.str(), canonical)) {
    return Error(Code::kFailedPrecondition,
                 "the volume is mounted on " + *at +
                     ": fsck works offline only (unmount it first; a mount would race repairs "
                     "and keep its own view of every file)");
  }
  Walker walker(canonical, keys, options);
  return walker.Run();
}

}  // namespace kmsfs::fs::fsck
