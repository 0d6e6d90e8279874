#include "fs/lifecycle/volume_scan.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <sstream>

#include "common/base/bytes.h"
#include "common/base/unique_fd.h"
#include "common/format/file_header.h"
#include "common/format/name_encoding.h"
#include "common/format/wrapped_blob.h"
#include "fs/core/name_codec.h"
#include "fs/core/small_file.h"

namespace kmsfs::fs::lifecycle {
namespace {

struct Walker {
  NameCodec* names;
  dev_t dev = 0;
  std::set<std::pair<dev_t, ino_t>> seen;
  std::vector<BackingEntry> out;
  // Everything the walk could not look into. Never skipped silently: a subtree we cannot read
  // may hold files under any key version, so `retire-version` must refuse and `rewrap` must
  // fail while anything is listed here (docs/lifecycle.md).
  std::vector<std::pair<std::string, std::string>> unreadable;

  void Unreadable(const std::string& path, const std::string& what, int err) {
    unreadable.emplace_back(path, what + ": " + std::strerror(err));
  }

  // `plain_dir` is "" for the root, "/a/b" below; `have_plain` false once a name failed to
  // decrypt (children then show backing paths only).
  void Walk(const std::string& dir_path, const std::string& plain_dir, bool have_plain) {
    UniqueFd dirfd(::open(dir_path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!dirfd.valid()) {
      Unreadable(dir_path, "cannot open directory", errno);
      return;
    }
    std::optional<format::Id128> dir_id;
    if (names != nullptr && have_plain) {
      auto raw = ReadSmallFile(dirfd.get(), format::kDirIdName, 64);
      if (raw.ok()) {
        auto id = format::ParseDirId(*raw);
        if (id.ok()) dir_id = *id;
      }
    }
    const int dup = ::fcntl(dirfd.get(), F_DUPFD_CLOEXEC, 0);
    if (dup < 0) {
      Unreadable(dir_path, "cannot read directory", errno);
      return;
    }
    DIR* d = ::fdopendir(dup);
    if (d == nullptr) {
      Unreadable(dir_path, "cannot read directory", errno);
      ::close(dup);
      return;
    }
    std::vector<std::pair<std::string, unsigned char>> children;
    for (;;) {
      errno = 0;  // readdir returns null both at the end and on error; only errno tells
      const struct dirent* e = ::readdir(d);
      if (e == nullptr) {
        // The entries read so far are still scanned; the rest of the directory is not.
        if (errno != 0) Unreadable(dir_path, "cannot read directory", errno);
        break;
      }
      if (std::strcmp(e->d_name, ".") == 0 || std::strcmp(e->d_name, "..") == 0) continue;
      children.emplace_back(e->d_name, e->d_type);
    }
    ::closedir(d);
    for (const auto& [name, type] : children) {
      const bool long_name = format::ParseLongName(name).ok();
      if (format::IsReservedBackingName(name) && !long_name) continue;
      const std::string child_path = dir_path + "/" + name;
      struct stat st;
      if (::fstatat(dirfd.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
        // ENOENT: removed since readdir (a live volume); a file that is gone needs no key.
        if (errno != ENOENT) Unreadable(child_path, "cannot stat", errno);
        continue;
      }
      if (st.st_dev != dev) {
        // Never leave the cipher directory's file system, but say so: whatever the mount hides
        // (and whatever is on it) was not scanned.
        unreadable.emplace_back(child_path, "another file system is mounted here; not scanned");
        continue;
      }
      std::string plain;
      bool plain_ok = false;
      if (dir_id) {
        std::string long_content;
        bool side_ok = true;
        if (long_name) {
          auto side = ReadSmallFile(dirfd.get(), format::LongNameSideFile(name), 4096);
          side_ok = side.ok();
          if (side_ok) long_content = std::string(AsChars(*side));
        }
        if (side_ok) {
          auto decrypted = names->DecryptName(*dir_id, name, long_content);
          if (decrypted.ok()) {
            plain = plain_dir + "/" + *decrypted;
            plain_ok = true;
          }
        }
      }
      if (S_ISDIR(st.st_mode)) {
        Walk(child_path, plain, plain_ok);
      } else if (S_ISREG(st.st_mode)) {
        if (!seen.emplace(st.st_dev, st.st_ino).second) continue;  // another hard link
        out.push_back(BackingEntry{child_path, plain_ok ? plain : std::string()});
      }
    }
  }
};

}  // namespace

Result<Bytes> ReadHeaderPage(int fd) {
  Bytes page(format::FileHeader::kSize);
  size_t got = 0;
  while (got < page.size()) {
    const ssize_t n = ::pread(fd, page.data() + got, page.size() - got, static_cast<off_t>(got));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Error::FromErrno("read header page", errno);
    if (n == 0) return Error(Code::kCorrupt, "backing file is shorter than its header page");
    got += static_cast<size_t>(n);
  }
  return page;
}

Result<BackingTree> ListBackingFiles(const std::string& cipherdir, NameCodec* names) {
  struct stat st;
  if (::stat(cipherdir.c_str(), &st) != 0) {
    return Error::FromErrno("stat cipher directory " + cipherdir, errno);
  }
  if (!S_ISDIR(st.st_mode)) return Error(Code::kInvalidArgument, cipherdir + " is not a directory");
  Walker w{names, st.st_dev, {}, {}, {}};
  std::string root = cipherdir;
  while (root.size() > 1 && root.back() == '/') root.pop_back();
  w.Walk(root, "", true);
  return BackingTree{std::move(w.out), std::move(w.unreadable)};
}

Result<HeaderKey> ReadHeaderKey(const std::string& backing_path) {
  UniqueFd fd(::open(backing_path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd.valid()) return Error::FromErrno("open backing file", errno);
  KMSFS_ASSIGN_OR_RETURN(Bytes page, ReadHeaderPage(fd.get()));
  KMSFS_ASSIGN_OR_RETURN(format::FileHeader header, format::ParseFileHeader(page));
  KMSFS_ASSIGN_OR_RETURN(auto key, format::PeekWrappedBlobKey(header.wrapped_dek));
  return HeaderKey{std::move(key.first), key.second};
}

uint64_t VersionReport::CountBelow(const std::string& key_id, uint32_t version) const {
  uint64_t n = 0;
  for (const auto& [k, count] : files) {
    if (k.first == key_id && k.second < version) n += count;
  }
  if (name_key.key_id == key_id && name_key.version < version) ++n;
  return n;
}

uint64_t VersionReport::CountAt(const std::string& key_id, uint32_t version) const {
  auto it = files.find({key_id, version});
  uint64_t n = it == files.end() ? 0 : it->second;
  if (name_key.key_id == key_id && name_key.version == version) ++n;
  return n;
}

Result<VersionReport> ScanVersions(const std::string& cipherdir, NameCodec* names) {
  UniqueFd dir(::open(cipherdir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dir.valid()) return Error::FromErrno("open cipher directory " + cipherdir, errno);
  auto json = ReadSmallFile(dir.get(), format::kVolumeConfigName, format::kMaxVolumeConfigSize);
  if (!json.ok()) {
    if (json.error().code() == Code::kNotFound) {
      return Error(Code::kNotFound, "not a kmsfs volume: no kmsfs.conf");
    }
    return json.error();
  }
  VersionReport report;
  KMSFS_ASSIGN_OR_RETURN(report.config, format::ParseVolumeConfig(AsChars(*json)));
  KMSFS_ASSIGN_OR_RETURN(auto name_key, format::PeekWrappedBlobKey(report.config.name_key_blob));
  report.name_key = HeaderKey{name_key.first, name_key.second};
  KMSFS_ASSIGN_OR_RETURN(BackingTree tree, ListBackingFiles(cipherdir, names));
  report.unreadable = std::move(tree.unreadable);
  for (const BackingEntry& e : tree.files) {
    auto key = ReadHeaderKey(e.backing_path);
    if (!key.ok()) {
      report.unreadable.emplace_back(e.Display(), key.error().message());
      continue;
    }
    ++report.files[{key->key_id, key->version}];
    ++report.total;
  }
  return report;
}

std::string FormatVersionReport(const VersionReport& r, bool json) {
  if (json) {
    nlohmann::json j;
    j["VolumeId"] = HexEncode(r.config.volume_id);
    j["KeyId"] = r.config.key_id;
    j["Files"] = r.total;
    j["NameKey"] = {{"KeyId", r.name_key.key_id}, {"KeyVersion", r.name_key.version}};
    j["Versions"] = nlohmann::json::array();
    for (const auto& [k, count] : r.files) {
      j["Versions"].push_back({{"KeyId", k.first}, {"KeyVersion", k.second}, {"Files", count}});
    }
    j["Unreadable"] = nlohmann::json::array();
    for (const auto& [path, why] : r.unreadable) {
      j["Unreadable"].push_back({{"Path", path}, {"Error", why}});
    }
    return j.dump(2) + "\n";
  }
  std::ostringstream o;
  o << "Volume " << HexEncode(r.config.volume_id) << " (KeyId " << r.config.key_id
    << "): " << r.total << " files\n";
  for (const auto& [k, count] : r.files) {
    o << "  key " << k.first << " version " << k.second << ": " << count << " files\n";
  }
  o << "  name key (kmsfs.conf): key " << r.name_key.key_id << " version " << r.name_key.version
    << "\n";
  if (!r.unreadable.empty()) {
    o << "  unreadable (headers, directories, mount points): " << r.unreadable.size() << "\n";
    for (const auto& [path, why] : r.unreadable) o << "    " << path << ": " << why << "\n";
  }
  return o.str();
}

}  // namespace kmsfs::fs::lifecycle
