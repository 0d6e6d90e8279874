#include <cerrno>

#include "common/base/bytes.h"
#include "common/base/status.h"
#include "tests/catch.h"

namespace kmsfs {
namespace {

Result<int> Half(int x) {
  if (x % 2) return Error(Code::kInvalidArgument, "odd");
  return x / 2;
}

Result<int> Quarter(int x) {
  KMSFS_ASSIGN_OR_RETURN(int h, Half(x));
  KMSFS_ASSIGN_OR_RETURN(int q, Half(h));
  return q;
}

TEST_CASE("Result carries a value or an error", "[base]") {
  REQUIRE(Quarter(8).ok());
  CHECK(*Quarter(8) == 2);
  auto bad = Quarter(6);
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.error().code() == Code::kInvalidArgument);
  CHECK(bad.error().message() == "odd");
}

TEST_CASE("Error keeps the OS errno", "[base]") {
  Error e = Error::FromErrno("open /x", ENOSPC);
  CHECK(e.code() == Code::kIo);
  CHECK(e.sys_errno() == ENOSPC);
  CHECK(e.ToString().find("errno 28") != std::string::npos);
  Status s = e;
  CHECK_FALSE(s.ok());
  CHECK(s.code() == Code::kIo);
}

TEST_CASE("hex round-trips and rejects garbage", "[base]") {
  Bytes b{0x00, 0xab, 0xff};
  CHECK(HexEncode(b) == "00abff");
  Bytes out;
  REQUIRE(HexDecode("00ABff", &out));
  CHECK(out == b);
  CHECK_FALSE(HexDecode("abc", &out));
  CHECK_FALSE(HexDecode("zz", &out));
}

TEST_CASE("big-endian helpers", "[base]") {
  uint8_t buf[8];
  PutU64(buf, 0x0102030405060708ull);
  CHECK(buf[0] == 1);
  CHECK(GetU64(buf) == 0x0102030405060708ull);
  PutU32(buf, 0xdeadbeef);
  CHECK(GetU32(buf) == 0xdeadbeefu);
  PutU16(buf, 0xbeef);
  CHECK(GetU16(buf) == 0xbeef);
}

}  // namespace
}  // namespace kmsfs
