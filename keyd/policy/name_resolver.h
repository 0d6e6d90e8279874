// NameResolver: the policy engine's only window on the user and group databases.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/base/status.h"

namespace kmsfs::keyd {

// Policies name users and groups; requests carry numeric ids. Evaluate asks this interface to
// bridge the two at evaluation time, so a policy follows renames and new group members without
// being re-put. Every method distinguishes three answers, because the engine fails closed on doubt:
//   value     — the database has an answer;
//   nullopt   — the database says there is no such user/group (a definite "no");
//   Error     — the lookup itself failed (NSS backend down, EIO, ...): nobody knows.
// Implementations must be safe to call from several threads at once and must not throw.
class NameResolver {
 public:
  virtual ~NameResolver() = default;

  virtual Result<std::optional<uint32_t>> UidForUser(std::string_view user) const = 0;
  virtual Result<std::optional<uint32_t>> GidForGroup(std::string_view group) const = 0;
  virtual Result<std::optional<std::string>> UserName(uint32_t uid) const = 0;
  virtual Result<std::optional<std::string>> GroupName(uint32_t gid) const = 0;

  // The gids of every group the user `uid` belongs to per the group database, including
  // `primary_gid` (getgrouplist semantics). Used only when a request does not carry the caller's
  // supplementary groups. An unknown uid yields {primary_gid}.
  virtual Result<std::vector<uint32_t>> GroupsOf(uint32_t uid, uint32_t primary_gid) const = 0;
};

}  // namespace kmsfs::keyd
