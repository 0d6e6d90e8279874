#include "keyd/policy/static_name_resolver.h"

#include <algorithm>

namespace kmsfs::keyd {

void StaticNameResolver::AddUser(std::string name, uint32_t uid) {
  name_by_uid_.emplace(uid, name);
  uid_by_name_.emplace(std::move(name), uid);
}

void StaticNameResolver::AddGroup(std::string name, uint32_t gid,
                                  std::vector<std::string> members) {
  groups_.push_back(Group{std::move(name), gid, std::move(members)});
}

Result<std::optional<uint32_t>> StaticNameResolver::UidForUser(std::string_view user) const {
  const auto it = uid_by_name_.find(user);
  if (it == uid_by_name_.end()) return std::optional<uint32_t>();
  return std::optional<uint32_t>(it->second);
}

Result<std::optional<uint32_t>> StaticNameResolver::GidForGroup(std::string_view group) const {
  for (const Group& g : groups_) {
    if (g.name == group) return std::optional<uint32_t>(g.gid);
  }
  return std::optional<uint32_t>();
}

Result<std::optional<std::string>> StaticNameResolver::UserName(uint32_t uid) const {
  const auto it = name_by_uid_.find(uid);
  if (it == name_by_uid_.end()) return std::optional<std::string>();
  return std::optional<std::string>(it->second);
}

Result<std::optional<std::string>> StaticNameResolver::GroupName(uint32_t gid) const {
  for (const Group& g : groups_) {
    if (g.gid == gid) return std::optional<std::string>(g.name);
  }
  return std::optional<std::string>();
}

Result<std::vector<uint32_t>> StaticNameResolver::GroupsOf(uint32_t uid,
                                                           uint32_t primary_gid) const {
  std::vector<uint32_t> gids{primary_gid};
  const auto user = name_by_uid_.find(uid);
  if (user == name_by_uid_.end()) return gids;
  for (const Group& g : groups_) {
    const bool member =
        std::find(g.members.begin(), g.members.end(), user->second) != g.members.end();
    if (member && std::find(gids.begin(), gids.end(), g.gid) == gids.end()) gids.push_back(g.gid);
  }
  return gids;
}

}  // namespace kmsfs::keyd
