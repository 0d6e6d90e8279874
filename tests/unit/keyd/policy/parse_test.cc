// CompiledPolicy::Parse: good policies compile; every bad one is refused with its location.
#include <dirent.h>

#include <algorithm>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "keyd/policy/policy.h"
#include "tests/catch.h"

namespace kmsfs::keyd {
namespace {

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<std::string> ListDir(const std::string& dir, const std::string& suffix) {
  std::vector<std::string> names;
  if (DIR* d = opendir(dir.c_str())) {
    while (dirent* e = readdir(d)) {
      const std::string n = e->d_name;
      if (n.size() > suffix.size() &&
          n.compare(n.size() - suffix.size(), suffix.size(), suffix) == 0) {
        names.push_back(n);
      }
    }
    closedir(d);
  }
  std::sort(names.begin(), names.end());
  return names;
}

const std::string kPolicies = std::string(KMSFS_TESTDATA_DIR) + "/policies";

TEST_CASE("Parse: every example policy compiles", "[policy][parse]") {
  const auto names = ListDir(kPolicies + "/good", ".json");
  REQUIRE(names.size() >= 8);
  for (const std::string& n : names) {
    INFO(n);
    auto p = CompiledPolicy::Parse(ReadFile(kPolicies + "/good/" + n));
    INFO((p.ok() ? std::string() : p.error().message()));
    CHECK(p.ok());
  }
}

TEST_CASE("Parse: the built-in policies compile", "[policy][parse]") {
  auto def = CompiledPolicy::Parse(DefaultKeyPolicy());
  REQUIRE(def.ok());
  CHECK(def->statement_count() == 1);
  CHECK(def->id() == "kmsfs-default-key-policy");
  for (uint32_t uid : {0u, 1000u, 4294967294u}) {
    auto owner = CompiledPolicy::Parse(VolumeOwnerPolicy(uid));
    REQUIRE(owner.ok());
    CHECK(owner->statement_count() == 2);
  }
}

// tests/testdata/policies/bad/NAME.json is refused with a message starting with NAME.err's text.
TEST_CASE("Parse: the bad-policy corpus is refused, each with its location", "[policy][parse]") {
  const std::string dir = kPolicies + "/bad";
  const auto names = ListDir(dir, ".json");
  REQUIRE(names.size() >= 60);
  for (const std::string& n : names) {
    const std::string stem = n.substr(0, n.size() - 5);
    INFO(n);
    std::string expected = ReadFile(dir + "/" + stem + ".err");
    while (!expected.empty() && (expected.back() == '\n' || expected.back() == '\r'))
      expected.pop_back();
    REQUIRE_FALSE(expected.empty());  // every case has its sidecar
    auto p = CompiledPolicy::Parse(ReadFile(dir + "/" + n));
    REQUIRE_FALSE(p.ok());
    CHECK(p.error().code() == Code::kInvalidArgument);
    const std::string& msg = p.error().message();
    INFO("message: " << msg);
    CHECK(msg.rfind(expected, 0) == 0);
    CHECK(msg.find(": ") != std::string::npos);  // "<location>: <problem>"
  }
  // And no sidecar without its policy.
  for (const std::string& e : ListDir(dir, ".err")) {
    INFO(e);
    CHECK(std::ifstream(dir + "/" + e.substr(0, e.size() - 4) + ".json").good());
  }
}

TEST_CASE("Parse: the size limit is 32 KiB of text", "[policy][parse]") {
  const std::string head =
      R"({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": "*", "Action": "kms:Decrypt"}]})";
  std::string fits = head + std::string(kMaxPolicyBytes - head.size(), ' ');
  CHECK(CompiledPolicy::Parse(fits).ok());
  fits.push_back(' ');
  auto over = CompiledPolicy::Parse(fits);
  REQUIRE_FALSE(over.ok());
  CHECK(over.error().message() == "policy: 32769 bytes exceeds the 32768-byte limit");
}

TEST_CASE("Parse: errors quote user input safely", "[policy][parse]") {
  auto p = CompiledPolicy::Parse(
      "{\"Version\": \"2012-10-17\", \"Statement\": [{\"Effect\": \"Allow\", \"Principal\": \"*\","
      " \"Action\": \"kms:De\\u001b[2Jcrypt\\n\"}]}");
  REQUIRE_FALSE(p.ok());
  CHECK(p.error().message() == "Statement[0].Action: unknown action \"kms:De\\x1b[2Jcrypt\\x0a\"");
}

TEST_CASE("Parse never throws or crashes on mangled input", "[policy][parse]") {
  // Deterministic mutations of the example policies: byte flips, truncations, splices.
  std::vector<std::string> seeds;
  for (const std::string& n : ListDir(kPolicies + "/good", ".json")) {
    seeds.push_back(ReadFile(kPolicies + "/good/" + n));
  }
  REQUIRE_FALSE(seeds.empty());
  std::mt19937 rng(12345);
  int parsed = 0;
  for (int i = 0; i < 3000; ++i) {
    std::string s = seeds[rng() % seeds.size()];
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits && !s.empty(); ++e) {
      const size_t pos = rng() % s.size();
      switch (rng() % 4) {
        case 0:
          s[pos] = static_cast<char>(rng());
          break;
        case 1:
          s.erase(pos, 1 + rng() % 8);
          break;
        case 2:
          s.insert(pos, seeds[rng() % seeds.size()].substr(0, rng() % 64));
          break;
        case 3:
          s.resize(pos);
          break;
      }
    }
    auto p = CompiledPolicy::Parse(s);
    if (p.ok()) {
      ++parsed;
    } else {
      CHECK(p.error().code() == Code::kInvalidArgument);
      CHECK_FALSE(p.error().message().empty());
    }
  }
  CHECK(parsed > 0);  // some mutations stay valid (e.g. inside a Sid)
}

}  // namespace
}  // namespace kmsfs::keyd
