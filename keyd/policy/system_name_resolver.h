// SystemNameResolver: NameResolver over the host's NSS databases (passwd, group).
#pragma once

#include "keyd/policy/name_resolver.h"

namespace kmsfs::keyd {

// Uses getpwnam_r/getpwuid_r/getgrnam_r/getgrgid_r/getgrouplist; this is the policy module's only
// I/O. No caching: every call asks NSS, so changes to /etc/group apply to the next evaluation
// (a caching decorator, if ever needed, must document its staleness bound). "Not found" answers
// (0, ENOENT, ESRCH, EBADF, EPERM per getpwnam_r(3)) are nullopt; any other failure is an Error
// of kUnavailable carrying the errno. Thread-safe: all calls are reentrant and stateless.
class SystemNameResolver final : public NameResolver {
 public:
  Result<std::optional<uint32_t>> UidForUser(std::string_view user) const override;
  Result<std::optional<uint32_t>> GidForGroup(std::string_view group) const override;
  Result<std::optional<std::string>> UserName(uint32_t uid) const override;
  Result<std::optional<std::string>> GroupName(uint32_t gid) const override;
  Result<std::vector<uint32_t>> GroupsOf(uint32_t uid, uint32_t primary_gid) const override;
};

}  // namespace kmsfs::keyd
