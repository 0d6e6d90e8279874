// Test helpers for common/crypto: hex literals and the key = value KAT files in
// tests/testdata/crypto/ (format described at the top of each file).
#pragma once

#include <fstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/base/bytes.h"
#include "tests/catch.h"

namespace kmsfs::crypto::testing {

// Hex literal to bytes; a malformed literal fails the running test.
inline Bytes Hex(std::string_view hex) {
  Bytes out;
  const bool ok = HexDecode(hex, &out);
  INFO("hex literal: " << hex);
  REQUIRE(ok);
  return out;
}

// One blank-line-separated block of "Name = value" lines. Names may repeat (AAD components).
struct KatRecord {
  std::vector<std::pair<std::string, std::string>> fields;
  int first_line = 0;

  bool Has(std::string_view name) const {
    for (const auto& [k, v] : fields) {
      if (k == name) return true;
    }
    return false;
  }
  // The value of the only `name` line, or "" when there is none.
  std::string Get(std::string_view name) const {
    for (const auto& [k, v] : fields) {
      if (k == name) return v;
    }
    return "";
  }
  std::vector<std::string> GetAll(std::string_view name) const {
    std::vector<std::string> out;
    for (const auto& [k, v] : fields) {
      if (k == name) out.push_back(v);
    }
    return out;
  }
  Bytes GetHex(std::string_view name) const { return Hex(Get(name)); }
  // "Source (line N)", for test failure messages.
  std::string Label() const { return Get("Source") + " (line " + std::to_string(first_line) + ")"; }
};

inline std::string Trim(std::string_view s) {
  const size_t b = s.find_first_not_of(" \t\r");
  if (b == std::string_view::npos) return "";
  const size_t e = s.find_last_not_of(" \t\r");
  return std::string(s.substr(b, e - b + 1));
}

// Loads tests/testdata/crypto/<name>. Fails the running test if the file is missing or empty.
inline std::vector<KatRecord> LoadKatFile(const std::string& name) {
  const std::string path = std::string(KMSFS_TESTDATA_DIR) + "/crypto/" + name;
  std::ifstream in(path);
  INFO("KAT file: " << path);
  REQUIRE(in.good());
  std::vector<KatRecord> records;
  KatRecord current;
  std::string line;
  int line_no = 0;
  auto flush = [&] {
    if (!current.fields.empty()) records.push_back(std::move(current));
    current = KatRecord();
  };
  while (std::getline(in, line)) {
    ++line_no;
    const std::string t = Trim(line);
    if (t.empty()) {
      flush();
      continue;
    }
    if (t[0] == '#') continue;
    const size_t eq = t.find('=');
    INFO("line " << line_no << ": " << t);
    REQUIRE(eq != std::string::npos);
    if (current.fields.empty()) current.first_line = line_no;
    current.fields.emplace_back(Trim(std::string_view(t).substr(0, eq)),
                                Trim(std::string_view(t).substr(eq + 1)));
  }
  flush();
  REQUIRE_FALSE(records.empty());
  return records;
}

}  // namespace kmsfs::crypto::testing
