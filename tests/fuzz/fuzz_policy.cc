// Fuzzes the key-policy language: arbitrary bytes must never crash CompiledPolicy::Parse; whatever
// parses must evaluate a fixed set of requests without crashing and with a consistent Decision;
// and the same bytes used as a request path must never be allowed unless they are a clean path.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "keyd/policy/glob.h"
#include "keyd/policy/policy.h"
#include "tests/unit/keyd/policy/fake_name_resolver.h"

namespace {

using kmsfs::keyd::Action;
using kmsfs::keyd::AuthzRequest;
using kmsfs::keyd::CompiledPolicy;
using kmsfs::keyd::Decision;
using kmsfs::keyd::Effect;

const kmsfs::keyd::testing::FakeNameResolver& Resolver() {
  static const auto* resolver = new kmsfs::keyd::testing::FakeNameResolver();
  return *resolver;
}

AuthzRequest Make(Action a, uint32_t uid, uint32_t gid) {
  AuthzRequest r;
  r.action = a;
  r.uid = uid;
  r.gid = gid;
  return r;
}

// Requests that reach every key kind, a failing lookup (uid 2000/2001) and a traversal path.
const std::vector<AuthzRequest>& Requests() {
  static const auto* requests = [] {
    auto* v = new std::vector<AuthzRequest>();
    AuthzRequest a = Make(Action::kDecrypt, 1000, 1000);
    a.path = "/alice/notes.txt";
    a.unit = "postgresql.service";
    a.executable = "/usr/bin/psql";
    a.volume = "vol1";
    a.encryption_context = {{"app", "billing"}, {"tenant", "acme"}};
    v->push_back(a);
    AuthzRequest b = Make(Action::kGenerateDataKey, 1001, 1001);
    b.path = "/shared/a.txt";
    b.supplementary_gids = std::vector<uint32_t>{50};
    b.forwarded = true;
    v->push_back(b);
    v->push_back(Make(Action::kPutKeyPolicy, 0, 0));
    AuthzRequest c = Make(Action::kReEncryptFrom, 2000, 77);
    c.path = "//x/./y/";
    v->push_back(c);
    AuthzRequest d = Make(Action::kDecrypt, 2001, 2001);
    d.path = "/a/../b";
    v->push_back(d);
    return v;
  }();
  return *requests;
}

// Grants everything, so only path checks can deny: any Allow of a bad path would show here.
const CompiledPolicy& PermissivePathPolicy() {
  static const auto* policy = new CompiledPolicy(*CompiledPolicy::Parse(R"({
    "Version": "2012-10-17",
    "Statement": [
      {"Effect": "Allow", "Principal": "*", "Action": "kms:*",
       "Condition": {"StringLike": {"kmsfs:Path": ["/**", "/a/*/b?/**/c"]}}}]})"));
  return *policy;
}

void Require(bool ok) {
  if (!ok) __builtin_trap();
}

void CheckDecision(const Decision& d) {
  Require(!d.reason.empty());
  Require(d.is_explicit == (d.statement_index >= 0));
  Require(d.is_explicit == !d.sid.empty());
  if (d.effect == Effect::kAllow) Require(d.is_explicit);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);

  auto policy = CompiledPolicy::Parse(text);
  if (policy.ok()) {
    for (const AuthzRequest& r : Requests()) {
      const Decision d = kmsfs::keyd::Evaluate(*policy, r, Resolver());
      CheckDecision(d);
      if (r.path && r.path->find("..") != std::string::npos) Require(!d.allowed());
    }
    (void)kmsfs::keyd::CheckLockout(*policy, Requests()[2], Resolver());
  } else {
    Require(!policy.error().message().empty());
  }

  AuthzRequest r = Make(Action::kDecrypt, 1000, 1000);
  r.path = std::string(text);
  const Decision d = kmsfs::keyd::Evaluate(PermissivePathPolicy(), r, Resolver());
  CheckDecision(d);
  Require(d.allowed() == kmsfs::keyd::NormalizeRequestPath(text).ok());
  return 0;
}
