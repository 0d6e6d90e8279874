// policy_bench: the cost of one policy decision (Evaluate) on a 50-statement key policy.
// Budget (issue): well under 10 µs per decision. Run: build/bench/policy_bench [iterations]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "keyd/policy/policy.h"
#include "keyd/policy/static_name_resolver.h"
#include "keyd/policy/system_name_resolver.h"

namespace {

using kmsfs::keyd::Action;
using kmsfs::keyd::AuthzRequest;
using kmsfs::keyd::CompiledPolicy;

constexpr int kUsers = 46;  // + root admin + group + 2 Deny statements = 50

// A realistic worst case: per-user home directories, a shared group area and two Deny statements
// with "**" globs and a negated condition, which every Decrypt must clear before any Allow.
std::string FiftyStatementPolicy(bool by_name) {
  std::string s = R"({"Version": "2012-10-17", "Statement": [
    {"Sid": "Root", "Effect": "Allow", "Principal": {"Uid": 0}, "Action": "kms:*"},)";
  for (int i = 0; i < kUsers; ++i) {
    const std::string principal = by_name ? R"({"User": "user)" + std::to_string(i) + R"("})"
                                          : R"({"Uid": )" + std::to_string(1000 + i) + "}";
    s += R"({"Sid": "Home)" + std::to_string(i) + R"(", "Effect": "Allow", "Principal": )" +
         principal + R"(, "Action": ["kms:Decrypt", "kms:GenerateDataKey*"], "Condition": {
           "StringLike": {"kmsfs:Path": "/home/user)" +
         std::to_string(i) + R"(/**"},
           "StringEquals": {"kmsfs:Volume": "vol1"}}},)";
  }
  s += R"(
    {"Sid": "Shared", "Effect": "Allow", "Principal": {"Group": "staff"}, "Action": "kms:Decrypt",
     "Condition": {"StringLike": {"kmsfs:Path": "/shared/**/*.txt"}}},
    {"Sid": "NoSecrets", "Effect": "Deny", "Principal": "*", "Action": "kms:Decrypt",
     "Condition": {"StringLike": {"kmsfs:Path": ["/**/secret/**", "/**/.ssh/**"]}}},
    {"Sid": "OnlyKnownTools", "Effect": "Deny", "Principal": "*", "Action": "kms:Decrypt",
     "Condition": {"StringNotLike": {"kmsfs:Executable": ["/usr/bin/*", "/usr/lib/*"]}}}]})";
  return s;
}

// Best-of-5 mean nanoseconds per call of fn over `iterations` calls.
double NsPerCall(int iterations, const std::function<int()>& fn) {
  double best = 1e300;
  volatile int sink = 0;
  for (int rep = 0; rep < 5; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < iterations; ++i) sink = sink + fn();
    const auto t1 = std::chrono::steady_clock::now();
    best = std::min(best, std::chrono::duration<double, std::nano>(t1 - t0).count() / iterations);
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  const int iterations = argc > 1 ? std::atoi(argv[1]) : 200000;
  kmsfs::keyd::StaticNameResolver names;
  for (int i = 0; i < kUsers; ++i) names.AddUser("user" + std::to_string(i), 1000 + i);
  names.AddGroup("staff", 50, {"user1", "user2"});

  const std::string by_uid_text = FiftyStatementPolicy(false);
  const std::string by_name_text = FiftyStatementPolicy(true);
  auto by_uid = CompiledPolicy::Parse(by_uid_text);
  auto by_name = CompiledPolicy::Parse(by_name_text);
  if (!by_uid.ok() || !by_name.ok()) {
    std::fprintf(stderr, "policy_bench: %s\n",
                 (by_uid.ok() ? by_name : by_uid).error().ToString().c_str());
    return 1;
  }

  AuthzRequest last_allow;  // matches only the last per-user statement: every statement is visited
  last_allow.action = Action::kDecrypt;
  last_allow.uid = 1000 + kUsers - 1;
  last_allow.gid = last_allow.uid;
  last_allow.supplementary_gids = std::vector<uint32_t>{};
  last_allow.path = "/home/user" + std::to_string(kUsers - 1) + "/projects/kmsfs/src/main.cc";
  last_allow.volume = "vol1";
  last_allow.executable = "/usr/bin/vim";
  last_allow.unit = "session-3.scope";

  AuthzRequest default_deny = last_allow;  // nobody's home: all 50 statements, then default deny
  default_deny.uid = default_deny.gid = 5000;

  AuthzRequest explicit_deny = last_allow;  // stops at the first Deny
  *explicit_deny.path = "/home/user3/secret/key.pem";

  AuthzRequest messy_path = last_allow;  // normalization work on top of the worst case
  *messy_path.path =
      "//home/./user" + std::to_string(kUsers - 1) + "//projects/./kmsfs/src/main.cc/";

  struct Row {
    const char* name;
    const CompiledPolicy* policy;
    const AuthzRequest* request;
    bool expect_allow;
  };
  const Row rows[] = {
      {"allow by the last statement, uid principals", &*by_uid, &last_allow, true},
      {"default deny after all 50, uid principals", &*by_uid, &default_deny, false},
      {"explicit deny (Deny pass only)", &*by_uid, &explicit_deny, false},
      {"allow by the last statement, messy path", &*by_uid, &messy_path, true},
      {"allow by the last statement, user-name principals", &*by_name, &last_allow, true},
      {"default deny after all 50, user-name principals", &*by_name, &default_deny, false},
  };

  std::printf("policy_bench: %zu statements, %d iterations, best of 5\n", by_uid->statement_count(),
              iterations);
  std::printf("%-52s %10s\n", "case", "ns/decision");
  double worst = 0;
  for (const Row& r : rows) {
    const auto d = kmsfs::keyd::Evaluate(*r.policy, *r.request, names);
    if (d.allowed() != r.expect_allow) {
      std::fprintf(stderr, "policy_bench: unexpected decision for %s: %s\n", r.name,
                   d.reason.c_str());
      return 1;
    }
    const double ns = NsPerCall(iterations, [&] {
      return static_cast<int>(kmsfs::keyd::Evaluate(*r.policy, *r.request, names).effect);
    });
    worst = std::max(worst, ns);
    std::printf("%-52s %10.0f\n", r.name, ns);
  }
  std::printf("%-52s %10.0f\n", "Parse (compile) the 50-statement policy",
              NsPerCall(std::max(1, iterations / 100),
                        [&] { return CompiledPolicy::Parse(by_uid_text).ok() ? 1 : 0; }));
  // For scale only: what one uncached NSS lookup costs when a policy names users and the service
  // uses SystemNameResolver directly (each named principal costs one such lookup per decision).
  kmsfs::keyd::SystemNameResolver nss;
  std::printf("%-52s %10.0f\n", "(for scale) one NSS getpwnam_r(\"root\")",
              NsPerCall(std::max(1, iterations / 100),
                        [&] { return nss.UidForUser("root").ok() ? 1 : 0; }));
  std::printf("worst decision: %.2f us (budget: well under 10 us)\n", worst / 1000.0);
  return worst < 10000.0 ? 0 : 1;
}
