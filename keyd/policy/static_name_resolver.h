// StaticNameResolver: a NameResolver over fixed in-memory tables (tests, fuzzing, benchmarks).
#pragma once

#include <map>
#include <string>
#include <vector>

#include "keyd/policy/name_resolver.h"

namespace kmsfs::keyd {

// Answers only from what was added; anything else is "no such user/group" (nullopt), never an
// Error. Build it completely before sharing; after that it is immutable and thread-safe.
class StaticNameResolver : public NameResolver {
 public:
  void AddUser(std::string name, uint32_t uid);
  // `members` are user names, as in /etc/group's fourth field.
  void AddGroup(std::string name, uint32_t gid, std::vector<std::string> members = {});

  Result<std::optional<uint32_t>> UidForUser(std::string_view user) const override;
  Result<std::optional<uint32_t>> GidForGroup(std::string_view group) const override;
  Result<std::optional<std::string>> UserName(uint32_t uid) const override;
  Result<std::optional<std::string>> GroupName(uint32_t gid) const override;
  Result<std::vector<uint32_t>> GroupsOf(uint32_t uid, uint32_t primary_gid) const override;

 private:
  struct Group {
    std::string name;
    uint32_t gid;
    std::vector<std::string> members;
  };
  std::map<std::string, uint32_t, std::less<>> uid_by_name_;
  std::map<uint32_t, std::string> name_by_uid_;
  std::vector<Group> groups_;
};

}  // namespace kmsfs::keyd
