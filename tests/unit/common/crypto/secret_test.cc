#include "common/crypto/secret.h"

#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "tests/catch.h"

namespace kmsfs::crypto {
namespace {

static_assert(!std::is_copy_constructible_v<SecretBytes>);
static_assert(!std::is_copy_assignable_v<SecretBytes>);
static_assert(std::is_nothrow_move_constructible_v<SecretBytes>);
static_assert(std::is_nothrow_move_assignable_v<SecretBytes>);
static_assert(!std::is_copy_constructible_v<MasterKey>);
// Keys of different purpose are different types: a DEK is not a master key.
static_assert(!std::is_convertible_v<Dek, MasterKey>);
static_assert(!std::is_constructible_v<MasterKey, Dek&&>);

#if defined(__SANITIZE_ADDRESS__)
constexpr bool kUnderAsan = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool kUnderAsan = true;
#else
constexpr bool kUnderAsan = false;
#endif
#else
constexpr bool kUnderAsan = false;
#endif

bool PageAligned(const void* p) {
  return reinterpret_cast<uintptr_t>(p) % static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE)) == 0;
}

// The VmFlags of the mapping holding `p` (from /proc/self/smaps), e.g. {"rd","wr","lo","dd"};
// empty if no mapping holds it.
std::set<std::string> MappingFlags(const void* p) {
  const auto addr = reinterpret_cast<uintptr_t>(p);
  std::ifstream smaps("/proc/self/smaps");
  std::string line;
  bool inside = false;
  while (std::getline(smaps, line)) {
    uintptr_t lo = 0, hi = 0;
    char dash = 0;
    std::istringstream head(line);
    if (head >> std::hex >> lo >> dash >> hi && dash == '-') {
      inside = lo <= addr && addr < hi;
      continue;
    }
    if (inside && line.rfind("VmFlags:", 0) == 0) {
      std::istringstream flags(line.substr(8));
      std::set<std::string> out;
      for (std::string f; flags >> f;) out.insert(f);
      return out;
    }
  }
  return {};
}

TEST_CASE("SecretBytes storage is zeroed, sized, undumpable and locked", "[crypto][secret]") {
  SecretBytes s(40);  // a pooled slot (keys and DEKs are this small)
  REQUIRE(s.size() == 40);
  CHECK_FALSE(s.empty());
  for (size_t i = 0; i < s.size(); ++i) CHECK(s.data()[i] == 0);
  SecretBytes big(3 * 4096 + 1);  // a page run of its own
  CHECK(PageAligned(big.data()));
  big.data()[big.size() - 1] = 7;  // the whole requested range is writable
  for (const SecretBytes* secret : {&s, &big}) {
    const std::set<std::string> flags = MappingFlags(secret->data());
    CHECK(flags.count("dd") == 1);                          // MADV_DONTDUMP: never in a core dump
    // mlock'ed: never swapped. Not checkable under ASan, whose mlock interceptor returns 0
    // without locking anything.
    if (!MlockEverFailed() && !kUnderAsan) CHECK(flags.count("lo") == 1);
    CHECK(flags.count("wf") == 1);  // MADV_WIPEONFORK: a forked child never sees the bytes
  }
}

TEST_CASE("A forked child sees secrets as zeros and gets locked memory for new ones",
          "[crypto][secret]") {
  SecretBytes small(32);
  SecretBytes big(2 * 4096);
  std::memset(small.data(), 0xA5, small.size());
  std::memset(big.data(), 0x5A, big.size());
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    // Exit codes say which property failed; no Catch macros in the child.
    for (size_t i = 0; i < small.size(); ++i) {
      if (small.data()[i] != 0) ::_exit(10);
    }
    for (size_t i = 0; i < big.size(); ++i) {
      if (big.data()[i] != 0) ::_exit(11);
    }
    // mlock is not inherited across fork: the pool re-locks its chunks in the child, so a
    // secret made there (the daemonized mount makes all of its keys after fork) is locked.
    SecretBytes fresh(32);
    if (!MlockEverFailed() && !kUnderAsan && MappingFlags(fresh.data()).count("lo") != 1) {
      ::_exit(12);
    }
    ::_exit(0);
  }
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  // The parent's copies are untouched.
  CHECK(small.data()[0] == 0xA5);
  CHECK(big.data()[big.size() - 1] == 0x5A);
}

TEST_CASE("A freed small secret's slot is wiped before anyone gets it again", "[crypto][secret]") {
  for (size_t size : {1, 32, 64, 65, 256, 1000, 1024, 1025}) {
    std::vector<const uint8_t*> seen;
    for (int round = 0; round < 3; ++round) {
      SecretBytes a(size);
      for (size_t i = 0; i < size; ++i) CHECK(a.data()[i] == 0);
      std::memset(a.data(), 0xA5, size);
      seen.push_back(a.data());
    }
    // The pool hands a freed slot out again (LIFO), so the zero checks above ran on a slot that
    // held 0xA5 a moment before. Under ASan each secret has its own pages instead.
    if (!kUnderAsan && size <= 1024) {  // larger secrets have page runs of their own
      CHECK(seen[0] == seen[1]);
      CHECK(seen[1] == seen[2]);
    }
  }
  // Many live secrets at once spill over into more chunks; all distinct, all zeroed.
  std::vector<SecretBytes> many;
  for (int i = 0; i < 3000; ++i) many.emplace_back(32);
  std::set<const uint8_t*> distinct;
  for (const SecretBytes& m : many) {
    distinct.insert(m.data());
    CHECK(m.data()[31] == 0);
  }
  CHECK(distinct.size() == many.size());
}

TEST_CASE("SecretBytes of size zero owns nothing", "[crypto][secret]") {
  SecretBytes z(0), d;
  CHECK(z.empty());
  CHECK(z.size() == 0);
  CHECK(z.data() == nullptr);
  CHECK(d.data() == nullptr);
  CHECK(z.span().empty());
  SecretBytes c = z.Clone();
  CHECK(c.empty());
  CHECK(SecretBytes::CopyFrom({}).empty());
  CHECK(ConstantTimeEqual(z.span(), d.span()));
}

TEST_CASE("SecretBytes moves ownership and Clone deep-copies", "[crypto][secret]") {
  const uint8_t raw[] = {1, 2, 3, 4, 5};
  SecretBytes a = SecretBytes::CopyFrom(raw);
  const uint8_t* where = a.data();

  SecretBytes b = std::move(a);
  CHECK(b.data() == where);  // moved, not copied
  CHECK(b.size() == 5);
  CHECK(a.data() == nullptr);  // NOLINT(bugprone-use-after-move): the moved-from state is specified
  CHECK(a.size() == 0);

  SecretBytes c(3);
  c = std::move(b);
  CHECK(c.data() == where);
  CHECK(b.empty());  // NOLINT(bugprone-use-after-move)

  SecretBytes d = c.Clone();
  CHECK(d.data() != c.data());
  CHECK(ConstantTimeEqual(d.span(), c.span()));
  d.mutable_span()[0] = 9;
  CHECK(c.data()[0] == 1);  // independent storage

  SecretBytes& alias = c;
  c = std::move(alias);  // self-move leaves the value intact
  CHECK(c.size() == 5);
}

TEST_CASE("ConstantTimeEqual compares contents and lengths", "[crypto][secret]") {
  const uint8_t x[] = {1, 2, 3}, y[] = {1, 2, 3}, z[] = {1, 2, 4}, w[] = {1, 2};
  CHECK(ConstantTimeEqual(x, y));
  CHECK_FALSE(ConstantTimeEqual(x, z));
  CHECK_FALSE(ConstantTimeEqual(x, w));
  CHECK(ConstantTimeEqual({}, {}));
}

TEST_CASE("SecretKey checks its size and compares in constant time", "[crypto][secret]") {
  CHECK(MasterKey::FromBytes(SecretBytes(31)).status().code() == Code::kInvalidArgument);
  auto k = MasterKey::FromBytes(SecretBytes(32));
  REQUIRE(k.ok());
  MasterKey copy = k->Clone();
  CHECK(copy == *k);
  copy.mutable_span()[31] ^= 1;
  CHECK_FALSE(copy == *k);
  MasterKey moved = std::move(copy);
  CHECK(moved.span().size() == 32);
}

TEST_CASE("Wipe zeroes buffers and strings", "[crypto][secret]") {
  uint8_t buf[4] = {1, 2, 3, 4};
  Wipe(buf);
  for (uint8_t b : buf) CHECK(b == 0);
  std::string s = "hunter2";
  Wipe(s);
  CHECK(s.empty());
  Wipe(std::span<uint8_t>());
}

}  // namespace
}  // namespace kmsfs::crypto
