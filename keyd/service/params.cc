#include "keyd/service/params.h"

#include <limits>
#include <utility>

#include "common/format/base64.h"
#include "common/ipc/errors.h"

namespace kmsfs::keyd {
namespace {

using nlohmann::json;

std::string Range(int64_t lo, int64_t hi) {
  return std::to_string(lo) + " to " + std::to_string(hi);
}
std::string SizeRange(size_t lo, size_t hi) {
  return std::to_string(lo) + " to " + std::to_string(hi);
}

std::string Quoted(std::string_view name) {
  // Field names come from the client: keep them short and printable in our messages.
  std::string out;
  for (char c : name.substr(0, 64)) {
    out += (c >= 0x20 && c < 0x7f) ? c : '?';
  }
  return out;
}

}  // namespace

Error ValidationError(const std::string& message) {
  return ipc::NamedError("ValidationException", message);
}

Result<ParamReader> ParamReader::Open(const json& params,
                                      std::initializer_list<std::string_view> allowed) {
  if (!params.is_object()) return ValidationError("Params must be a JSON object");
  for (const auto& [key, value] : params.items()) {
    bool known = false;
    for (std::string_view a : allowed) known = known || key == a;
    if (!known) {
      std::string list;
      for (std::string_view a : allowed) list += (list.empty() ? "" : ", ") + std::string(a);
      return ValidationError("unknown field " + Quoted(key) + "; this operation accepts " +
                             (list.empty() ? std::string("no fields") : list));
    }
  }
  return ParamReader(params);
}

const json* ParamReader::Find(std::string_view name) const {
  auto it = params_->find(name);
  if (it == params_->end() || it->is_null()) return nullptr;
  return &*it;
}

bool ParamReader::Has(std::string_view name) const { return Find(name) != nullptr; }

Result<std::optional<std::string>> ParamReader::OptString(std::string_view name, size_t min_len,
                                                          size_t max_len) const {
  const json* v = Find(name);
  if (v == nullptr) return std::optional<std::string>();
  if (!v->is_string()) return ValidationError(std::string(name) + " must be a string");
  const auto& s = v->get_ref<const std::string&>();
  if (s.size() < min_len || s.size() > max_len) {
    return ValidationError(std::string(name) + " must be " + SizeRange(min_len, max_len) +
                           " bytes long");
  }
  return std::optional<std::string>(s);
}

Result<std::string> ParamReader::String(std::string_view name, size_t min_len,
                                        size_t max_len) const {
  KMSFS_ASSIGN_OR_RETURN(std::optional<std::string> s, OptString(name, min_len, max_len));
  if (!s) return ValidationError(std::string(name) + " is required");
  return std::move(*s);
}

Result<std::optional<int64_t>> ParamReader::OptInt(std::string_view name, int64_t lo,
                                                   int64_t hi) const {
  const json* v = Find(name);
  if (v == nullptr) return std::optional<int64_t>();
  const std::string bad = std::string(name) + " must be an integer from " + Range(lo, hi);
  if (v->is_number_unsigned()) {
    const uint64_t u = v->get<uint64_t>();
    if (u > static_cast<uint64_t>(hi) || static_cast<int64_t>(u) < lo) return ValidationError(bad);
    return std::optional<int64_t>(static_cast<int64_t>(u));
  }
  if (v->is_number_integer()) {
    const int64_t i = v->get<int64_t>();
    if (i < lo || i > hi) return ValidationError(bad);
    return std::optional<int64_t>(i);
  }
  return ValidationError(bad);
}

Result<std::optional<bool>> ParamReader::OptBool(std::string_view name) const {
  const json* v = Find(name);
  if (v == nullptr) return std::optional<bool>();
  if (!v->is_boolean()) return ValidationError(std::string(name) + " must be true or false");
  return std::optional<bool>(v->get<bool>());
}

Result<format::EncryptionContext> ParamReader::Context(std::string_view name) const {
  format::EncryptionContext ctx;
  const json* v = Find(name);
  if (v == nullptr) return ctx;
  const std::string limits = std::string(name) +
                             " must be an object of at most 32 string pairs, keys 1 to 256 bytes "
                             "and values up to 2048 bytes";
  if (!v->is_object()) return ValidationError(limits);
  for (const auto& [key, value] : v->items()) {
    if (!value.is_string()) return ValidationError(limits);
    ctx.emplace(key, value.get<std::string>());
  }
  if (!format::CanonicalContext(ctx).ok()) return ValidationError(limits);
  return ctx;
}

Result<std::vector<KeyTag>> ParamReader::Tags(std::string_view name) const {
  std::vector<KeyTag> tags;
  const json* v = Find(name);
  if (v == nullptr) return tags;
  const std::string shape =
      std::string(name) + " must be a list of {\"TagKey\": string, \"TagValue\": string}";
  if (!v->is_array()) return ValidationError(shape);
  for (const json& t : *v) {
    if (!t.is_object() || t.size() != 2) return ValidationError(shape);
    auto k = t.find("TagKey");
    auto val = t.find("TagValue");
    if (k == t.end() || val == t.end() || !k->is_string() || !val->is_string()) {
      return ValidationError(shape);
    }
    tags.push_back(KeyTag{k->get<std::string>(), val->get<std::string>()});
  }
  return tags;
}

Result<std::optional<Bytes>> ParamReader::OptBase64(std::string_view name, size_t min_len,
                                                    size_t max_len,
                                                    std::string_view bad_base64_name) const {
  const json* v = Find(name);
  if (v == nullptr) return std::optional<Bytes>();
  const std::string shape = std::string(name) + " must be standard padded base64 of " +
                            SizeRange(min_len, max_len) + " bytes";
  if (!v->is_string()) return ValidationError(shape);
  const auto& text = v->get_ref<const std::string&>();
  if (text.size() > format::Base64EncodedLen(max_len)) {
    return ipc::NamedError(bad_base64_name, shape);
  }
  auto bytes = format::Base64Decode(text);
  if (!bytes.ok() || bytes->size() < min_len || bytes->size() > max_len) {
    if (bytes.ok()) crypto::Wipe(*bytes);
    return ipc::NamedError(bad_base64_name, shape);
  }
  return std::optional<Bytes>(std::move(*bytes));
}

Result<std::optional<crypto::SecretBytes>> ParamReader::OptSecretBase64(std::string_view name,
                                                                        size_t min_len,
                                                                        size_t max_len) const {
  KMSFS_ASSIGN_OR_RETURN(std::optional<Bytes> raw,
                         OptBase64(name, min_len, max_len, "ValidationException"));
  if (!raw) return std::optional<crypto::SecretBytes>();
  crypto::SecretBytes secret = crypto::SecretBytes::CopyFrom(*raw);
  crypto::Wipe(*raw);
  return std::optional<crypto::SecretBytes>(std::move(secret));
}

}  // namespace kmsfs::keyd
