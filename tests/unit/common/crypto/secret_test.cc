#include "common/crypto/secret.h"

#include <unistd.h>

#include <cstdint>
#include <type_traits>
#include <utility>

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

bool PageAligned(const void* p) {
  return reinterpret_cast<uintptr_t>(p) % static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE)) == 0;
}

TEST_CASE("SecretBytes storage is zeroed, page-aligned and sized", "[crypto][secret]") {
  SecretBytes s(40);
  REQUIRE(s.size() == 40);
  CHECK_FALSE(s.empty());
  CHECK(PageAligned(s.data()));
  for (size_t i = 0; i < s.size(); ++i) CHECK(s.data()[i] == 0);
  SecretBytes big(3 * 4096 + 1);
  CHECK(PageAligned(big.data()));
  big.data()[big.size() - 1] = 7;  // the whole requested range is writable
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
