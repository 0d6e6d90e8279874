#include "common/format/key_id.h"

namespace kmsfs::format {
namespace {

bool IsAlnum(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

}  // namespace

bool IsValidKeyId(std::string_view id) {
  if (id.empty() || id.size() > kMaxKeyIdLen) return false;
  for (char c : id) {
    if (!IsAlnum(c) && c != '-') return false;
  }
  return true;
}

bool IsValidAlias(std::string_view alias) {
  if (alias.size() > kMaxAliasLen || alias.size() <= kAliasPrefix.size()) return false;
  if (alias.substr(0, kAliasPrefix.size()) != kAliasPrefix) return false;
  for (char c : alias.substr(kAliasPrefix.size())) {
    if (!IsAlnum(c) && c != '-' && c != '_' && c != '/') return false;
  }
  return true;
}

bool IsValidKeyIdOrAlias(std::string_view s) { return IsValidKeyId(s) || IsValidAlias(s); }

}  // namespace kmsfs::format
