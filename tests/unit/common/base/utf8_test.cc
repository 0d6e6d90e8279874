#include "common/base/utf8.h"

#include <string>

#include "tests/catch.h"

namespace kmsfs {
namespace {

TEST_CASE("UTF-8: well-formed sequences pass, malformed ones fail", "[base][utf8]") {
  CHECK(IsValidUtf8(""));
  CHECK(IsValidUtf8("plain/ascii.txt"));
  CHECK(IsValidUtf8("caf\xC3\xA9"));               // é, 2 bytes
  CHECK(IsValidUtf8("\xE2\x82\xAC"));              // €, 3 bytes
  CHECK(IsValidUtf8("\xF0\x9F\x94\x91"));          // U+1F511, 4 bytes
  CHECK(Utf8SequenceLen("\xF0\x9F\x94\x91", 0) == 4);
  CHECK_FALSE(IsValidUtf8("\xC0\xAF"));            // overlong '/'
  CHECK_FALSE(IsValidUtf8("\xE0\x80\xAF"));        // overlong 3-byte
  CHECK_FALSE(IsValidUtf8("\xED\xA0\x80"));        // surrogate U+D800
  CHECK_FALSE(IsValidUtf8("\xF4\x90\x80\x80"));    // above U+10FFFF
  CHECK_FALSE(IsValidUtf8("\xE2\x82"));            // truncated
  CHECK_FALSE(IsValidUtf8("\x80"));                // lone continuation byte
  CHECK_FALSE(IsValidUtf8(std::string("a\xFF", 2)));
  CHECK(Utf8SequenceLen("\xE2\x82", 0) == 0);
}

}  // namespace
}  // namespace kmsfs
