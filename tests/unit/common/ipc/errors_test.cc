#include "common/ipc/errors.h"

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "tests/catch.h"

namespace kmsfs::ipc {
namespace {

constexpr Code kAllCodes[] = {Code::kOk,           Code::kNotFound,         Code::kAlreadyExists,
                              Code::kInvalidArgument, Code::kPermissionDenied, Code::kKeyUnavailable,
                              Code::kCorrupt,      Code::kIo,               Code::kUnavailable,
                              Code::kFailedPrecondition, Code::kInternal};

TEST_CASE("the wire names map to the decided codes", "[ipc][errors]") {
  const std::map<std::string, Code> expected = {
      {"NotFoundException", Code::kNotFound},
      {"AlreadyExistsException", Code::kAlreadyExists},
      {"ValidationException", Code::kInvalidArgument},
      {"AccessDeniedException", Code::kPermissionDenied},
      {"DisabledException", Code::kKeyUnavailable},
      {"KMSInvalidStateException", Code::kKeyUnavailable},
      {"KeyUnavailableException", Code::kKeyUnavailable},
      {"InvalidCiphertextException", Code::kCorrupt},
      {"IncorrectKeyException", Code::kCorrupt},
      {"DependencyTimeoutException", Code::kUnavailable},
      {"LimitExceededException", Code::kUnavailable},
      {"KMSInternalException", Code::kInternal},
      {"UnsupportedOperationException", Code::kFailedPrecondition},
  };
  CHECK(KnownErrorNames().size() == expected.size());
  for (std::string_view name : KnownErrorNames()) {
    INFO(name);
    REQUIRE(expected.count(std::string(name)) == 1);
    CHECK(CodeForErrorName(name) == expected.at(std::string(name)));
    CHECK(IsKnownErrorName(name));
  }
  CHECK(CodeForErrorName("SomeFutureException") == Code::kInternal);
  CHECK_FALSE(IsKnownErrorName("notfoundexception"));
}

TEST_CASE("every error code has a default name that maps back", "[ipc][errors]") {
  CHECK(ErrorNameForCode(Code::kOk).empty());
  for (Code c : kAllCodes) {
    if (c == Code::kOk) continue;
    INFO(CodeName(c));
    const auto name = ErrorNameForCode(c);
    REQUIRE(IsKnownErrorName(name));
    // kIo is keyd's own OS failure: to a client that is an internal error.
    CHECK(CodeForErrorName(name) == (c == Code::kIo ? Code::kInternal : c));
  }
  CHECK(ErrorNameForCode(Code::kKeyUnavailable) == "KMSInvalidStateException");
  CHECK(ErrorNameForCode(Code::kUnavailable) == "DependencyTimeoutException");
}

TEST_CASE("named errors keep their name across the wire", "[ipc][errors]") {
  const Error e = NamedError("DisabledException", "key 1234 is disabled");
  CHECK(e.code() == Code::kKeyUnavailable);
  CHECK(e.message() == "DisabledException: key 1234 is disabled");
  CHECK(ErrorNameOf(e) == "DisabledException");
  CHECK(ErrorMessageOf(e) == "key 1234 is disabled");

  const ErrorInfo info = ToErrorInfo(e);
  CHECK(info == ErrorInfo{"DisabledException", "key 1234 is disabled"});
  const Error back = FromErrorInfo(info);
  CHECK(back.code() == e.code());
  CHECK(back.message() == e.message());

  SECTION("a plain error travels under its code's default name") {
    const Error plain(Code::kNotFound, "alias/x is not found");
    CHECK(ToErrorInfo(plain) == ErrorInfo{"NotFoundException", "alias/x is not found"});
    const Error unreachable(Code::kUnavailable, "key service unreachable at /run/x");
    CHECK(ErrorNameOf(unreachable) == "DependencyTimeoutException");
  }
  SECTION("a prefix that contradicts the code is not trusted") {
    const Error odd(Code::kInternal, "NotFoundException: but really internal");
    CHECK(ErrorNameOf(odd) == "KMSInternalException");
    CHECK(ErrorMessageOf(odd) == odd.message());
  }
  SECTION("an unknown remote name is internal and keeps its text") {
    const Error f = FromErrorInfo({"BrandNewException", "what"});
    CHECK(f.code() == Code::kInternal);
    CHECK(f.message() == "BrandNewException: what");
  }
}

TEST_CASE("remote messages are made safe for a log line", "[ipc][errors]") {
  const Error e = FromErrorInfo({"ValidationException", "line1\nline2\x1b[31m\x7f"});
  CHECK(e.message() == "ValidationException: line1?line2?[31m?");
  std::string long_msg(1020, 'a');
  long_msg += "\xc3\xa9\xc3\xa9\xc3\xa9";  // é é é straddling byte 1024
  const Error cut = FromErrorInfo({"ValidationException", long_msg});
  const std::string_view body = ErrorMessageOf(cut);
  CHECK(body.size() <= 1024 + 3);
  CHECK(body.substr(body.size() - 3) == "...");
  CHECK(body.substr(1020, 4) == "\xc3\xa9\xc3\xa9");  // two whole characters, then the cut
}

TEST_CASE("errno and exit code tables", "[ipc][errors]") {
  const std::map<Code, std::pair<int, int>> table = {
      {Code::kOk, {0, 0}},
      {Code::kNotFound, {ENOENT, 3}},
      {Code::kAlreadyExists, {EEXIST, 8}},
      {Code::kInvalidArgument, {EINVAL, 2}},
      {Code::kPermissionDenied, {EACCES, 4}},
      {Code::kKeyUnavailable, {ENOKEY, 5}},
      {Code::kCorrupt, {EIO, 6}},
      {Code::kIo, {EIO, 1}},
      {Code::kUnavailable, {EHOSTDOWN, 7}},
      {Code::kFailedPrecondition, {EOPNOTSUPP, 1}},
      {Code::kInternal, {EIO, 1}},
  };
  for (Code c : kAllCodes) {
    INFO(CodeName(c));
    REQUIRE(table.count(c) == 1);
    CHECK(ErrnoForError(Error(c, "x")) == table.at(c).first);
    CHECK(ExitCodeForCode(c) == table.at(c).second);
  }
  CHECK(ErrnoForError(Error::FromErrno("write", ENOSPC)) == ENOSPC);
}

// docs/errors.md is the human copy of the tables above; this keeps the two from drifting.
std::vector<std::vector<std::string>> DocRows() {
  // Lexically normalized: "testdata/.." must not depend on tests/testdata existing.
  const auto path =
      (std::filesystem::path(KMSFS_TESTDATA_DIR) / ".." / ".." / "docs" / "errors.md")
          .lexically_normal();
  INFO(path.string());
  std::ifstream in(path);
  REQUIRE(in.good());
  std::vector<std::vector<std::string>> rows;
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("| `", 0) != 0) continue;
    std::vector<std::string> cells;
    std::stringstream ss(line.substr(1));
    std::string cell;
    while (std::getline(ss, cell, '|')) {
      std::string t;
      for (char ch : cell) {
        if (ch != '`') t += ch;
      }
      const auto b = t.find_first_not_of(' ');
      const auto e = t.find_last_not_of(' ');
      cells.push_back(b == std::string::npos ? "" : t.substr(b, e - b + 1));
    }
    rows.push_back(cells);
  }
  return rows;
}

TEST_CASE("docs/errors.md agrees with the code", "[ipc][errors]") {
  std::map<std::string, Code> codes;
  for (Code c : kAllCodes) codes[std::string(CodeName(c))] = c;
  const std::map<std::string, int> errnos = {
      {"0", 0},          {"ENOENT", ENOENT}, {"EEXIST", EEXIST},         {"EINVAL", EINVAL},
      {"EACCES", EACCES}, {"ENOKEY", ENOKEY}, {"EIO", EIO},              {"EHOSTDOWN", EHOSTDOWN},
      {"EOPNOTSUPP", EOPNOTSUPP}};
  std::set<std::string> names_seen;
  std::set<Code> codes_seen;
  for (const auto& row : DocRows()) {
    INFO(row[0]);
    REQUIRE(row.size() >= 2);
    if (row[0].size() > 9 && row[0].substr(row[0].size() - 9) == "Exception") {
      // Table 1: | name | code | meaning |
      REQUIRE(codes.count(row[1]) == 1);
      CHECK(CodeForErrorName(row[0]) == codes.at(row[1]));
      CHECK(IsKnownErrorName(row[0]));
      names_seen.insert(row[0]);
    } else if (codes.count(row[0]) == 1) {
      // Table 2: | code | default name | errno | exit code | ... |
      REQUIRE(row.size() >= 4);
      const Code c = codes.at(row[0]);
      codes_seen.insert(c);
      CHECK(ErrorNameForCode(c) == (row[1] == "-" ? "" : row[1]));
      const std::string errno_cell = row[2].substr(0, row[2].find(' '));
      if (c != Code::kIo) {
        REQUIRE(errnos.count(errno_cell) == 1);
        CHECK(ErrnoForError(Error(c, "x")) == errnos.at(errno_cell));
      }
      CHECK(std::to_string(ExitCodeForCode(c)) == row[3]);
    }
  }
  CHECK(names_seen.size() == KnownErrorNames().size());
  CHECK(codes_seen.size() == std::size(kAllCodes));
}

}  // namespace
}  // namespace kmsfs::ipc
