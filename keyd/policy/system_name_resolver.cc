// The policy module's only I/O: NSS lookups for user and group names.
#include "keyd/policy/system_name_resolver.h"

#include <grp.h>
#include <pwd.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <vector>

namespace kmsfs::keyd {
namespace {

// Big enough for any sane entry; a group with thousands of members can need more, hence ERANGE
// retries up to kMaxBuffer.
constexpr size_t kInitialBuffer = 4096;
constexpr size_t kMaxBuffer = 1 << 20;

// Calls fn(buffer, size, &found) with a growing buffer. fn returns the getpw*_r error code.
// Only "returned 0 and no entry" counts as "no such name": getpwnam_r(3) allows ENOENT, ESRCH,
// EBADF or EPERM for that too, but glibc also uses ENOENT when no NSS backend could be asked,
// and doubt must stay doubt (the engine fails closed on it).
template <class Fn>
Result<bool> WithBuffer(const char* what, Fn fn) {
  std::vector<char> buf(kInitialBuffer);
  while (true) {
    bool found = false;
    const int err = fn(buf.data(), buf.size(), &found);
    if (err == 0) return found;
    if (err == ERANGE && buf.size() < kMaxBuffer) {
      buf.resize(buf.size() * 2);
      continue;
    }
    return Error(Code::kUnavailable, std::string(what) + " failed", err);
  }
}

}  // namespace

Result<std::optional<uint32_t>> SystemNameResolver::UidForUser(std::string_view user) const {
  const std::string name(user);
  uint32_t uid = 0;
  KMSFS_ASSIGN_OR_RETURN(bool found, WithBuffer("getpwnam_r", [&](char* b, size_t n, bool* f) {
                           passwd pw{};
                           passwd* out = nullptr;
                           const int err = getpwnam_r(name.c_str(), &pw, b, n, &out);
                           if (err == 0 && out != nullptr) {
                             *f = true;
                             uid = out->pw_uid;
                           }
                           return err;
                         }));
  return found ? std::optional<uint32_t>(uid) : std::nullopt;
}

Result<std::optional<uint32_t>> SystemNameResolver::GidForGroup(std::string_view group) const {
  const std::string name(group);
  uint32_t gid = 0;
  KMSFS_ASSIGN_OR_RETURN(bool found, WithBuffer("getgrnam_r", [&](char* b, size_t n, bool* f) {
                           struct group gr {};
                           struct group* out = nullptr;
                           const int err = getgrnam_r(name.c_str(), &gr, b, n, &out);
                           if (err == 0 && out != nullptr) {
                             *f = true;
                             gid = out->gr_gid;
                           }
                           return err;
                         }));
  return found ? std::optional<uint32_t>(gid) : std::nullopt;
}

Result<std::optional<std::string>> SystemNameResolver::UserName(uint32_t uid) const {
  std::string name;
  KMSFS_ASSIGN_OR_RETURN(bool found, WithBuffer("getpwuid_r", [&](char* b, size_t n, bool* f) {
                           passwd pw{};
                           passwd* out = nullptr;
                           const int err = getpwuid_r(uid, &pw, b, n, &out);
                           if (err == 0 && out != nullptr && out->pw_name != nullptr) {
                             *f = true;
                             name = out->pw_name;
                           }
                           return err;
                         }));
  return found ? std::optional<std::string>(std::move(name)) : std::nullopt;
}

Result<std::optional<std::string>> SystemNameResolver::GroupName(uint32_t gid) const {
  std::string name;
  KMSFS_ASSIGN_OR_RETURN(bool found, WithBuffer("getgrgid_r", [&](char* b, size_t n, bool* f) {
                           struct group gr {};
                           struct group* out = nullptr;
                           const int err = getgrgid_r(gid, &gr, b, n, &out);
                           if (err == 0 && out != nullptr && out->gr_name != nullptr) {
                             *f = true;
                             name = out->gr_name;
                           }
                           return err;
                         }));
  return found ? std::optional<std::string>(std::move(name)) : std::nullopt;
}

Result<std::vector<uint32_t>> SystemNameResolver::GroupsOf(uint32_t uid,
                                                           uint32_t primary_gid) const {
  KMSFS_ASSIGN_OR_RETURN(std::optional<std::string> user, UserName(uid));
  if (!user) return std::vector<uint32_t>{primary_gid};
  // getgrouplist cannot report a backend failure (it returns what it found); that limit is
  // documented in docs/policy.md and is why requests should carry supplementary_gids.
  int count = 64;
  std::vector<gid_t> gids;
  for (int attempt = 0; attempt < 8; ++attempt) {
    gids.resize(static_cast<size_t>(count));
    int n = count;
    if (getgrouplist(user->c_str(), primary_gid, gids.data(), &n) >= 0) {
      gids.resize(static_cast<size_t>(n));
      std::vector<uint32_t> out(gids.begin(), gids.end());
      return out;
    }
    count = n > count ? n : count * 2;  // n is the size needed
  }
  return Error(Code::kUnavailable, "getgrouplist: too many groups");
}

}  // namespace kmsfs::keyd
