// FakeNameResolver: a fixed cast of users and groups, with injectable lookup failures and counters.
#pragma once

#include <atomic>
#include <set>
#include <string>

#include "keyd/policy/static_name_resolver.h"

namespace kmsfs::keyd::testing {

// Users (uid/primary gid): root 0/0, alice 1000/1000, bob 1001/1001, carol 1002/1002,
// postgres 105/108. Groups: root 0, wheel 10 {root, alice}, staff 50 {alice, bob},
// postgres 108, alice 1000, bob 1001, carol 1002.
// Failures: the user "ldapuser" and the group "ldapgroup" fail to resolve (Error, not "absent");
// UserName(2000) fails; GroupsOf(2001, ...) fails; GroupName(77) fails.
class FakeNameResolver final : public StaticNameResolver {
 public:
  FakeNameResolver() {
    AddUser("root", 0);
    AddUser("alice", 1000);
    AddUser("bob", 1001);
    AddUser("carol", 1002);
    AddUser("postgres", 105);
    AddGroup("root", 0);
    AddGroup("wheel", 10, {"root", "alice"});
    AddGroup("staff", 50, {"alice", "bob"});
    AddGroup("postgres", 108);
    AddGroup("alice", 1000);
    AddGroup("bob", 1001);
    AddGroup("carol", 1002);
  }

  Result<std::optional<uint32_t>> UidForUser(std::string_view user) const override {
    ++calls;
    if (user == "ldapuser") return Injected();
    return StaticNameResolver::UidForUser(user);
  }
  Result<std::optional<uint32_t>> GidForGroup(std::string_view group) const override {
    ++calls;
    if (group == "ldapgroup") return Injected();
    return StaticNameResolver::GidForGroup(group);
  }
  Result<std::optional<std::string>> UserName(uint32_t uid) const override {
    ++calls;
    if (uid == 2000) return Injected();
    return StaticNameResolver::UserName(uid);
  }
  Result<std::optional<std::string>> GroupName(uint32_t gid) const override {
    ++calls;
    if (gid == 77) return Injected();
    return StaticNameResolver::GroupName(gid);
  }
  Result<std::vector<uint32_t>> GroupsOf(uint32_t uid, uint32_t primary_gid) const override {
    ++calls;
    if (uid == 2001) return Injected();
    return StaticNameResolver::GroupsOf(uid, primary_gid);
  }

  mutable std::atomic<int> calls{0};

 private:
  static Error Injected() { return Error(Code::kUnavailable, "injected NSS failure"); }
};

}  // namespace kmsfs::keyd::testing
