#include "common/ipc/message.h"

#include <limits>
#include <set>
#include <utility>
#include <vector>

#include "common/base/scope_exit.h"
#include "common/base/utf8.h"
#include "common/crypto/secret.h"

namespace kmsfs::ipc {
namespace {

using nlohmann::json;

Error Invalid(std::string message) { return Error(Code::kInvalidArgument, std::move(message)); }

// Field names come from the peer: quote them only as short printable ASCII so a hostile name
// cannot forge log lines or bloat errors.
std::string Quote(std::string_view s) {
  std::string out = "\"";
  constexpr size_t kMax = 64;
  for (size_t i = 0; i < s.size() && i < kMax; ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    out.push_back(c >= 0x20 && c < 0x7F && c != '"' && c != '\\' ? static_cast<char>(c) : '?');
  }
  if (s.size() > kMax) out += "...";
  out += "\"";
  return out;
}

// One pass over the payload that builds the DOM (nlohmann's own DOM builder does the building)
// and rejects what nlohmann::json::parse would silently accept (duplicate keys: the last one
// wins) or what later code must not see (unbounded nesting). Key sets of the open objects are
// std::set, not a hash set, so crafted collisions cannot make one frame quadratic. Why one pass:
// a strict SAX pass followed by json::parse lexed every frame twice, ~half of keyd's request
// parsing time (and of the client's response parsing) in the Decrypt profile.
class StrictDomSax final : public json::json_sax_t {
 public:
  explicit StrictDomSax(json& root) : dom_(root, /*allow_exceptions=*/false) {}

  bool null() override { return dom_.null(); }
  bool boolean(bool val) override { return dom_.boolean(val); }
  bool number_integer(number_integer_t val) override { return dom_.number_integer(val); }
  bool number_unsigned(number_unsigned_t val) override { return dom_.number_unsigned(val); }
  bool number_float(number_float_t val, const string_t& s) override {
    return dom_.number_float(val, s);
  }
  bool string(string_t& val) override { return dom_.string(val); }
  bool binary(binary_t& /*val*/) override { return Fail("binary values are not JSON"); }
  bool start_object(std::size_t elements) override {
    if (!Enter()) return false;
    keys_.emplace_back();
    return dom_.start_object(elements);
  }
  bool key(string_t& val) override {
    if (!keys_.back().insert(val).second) return Fail("duplicate key " + Quote(val));
    return dom_.key(val);
  }
  bool end_object() override {
    keys_.pop_back();
    --depth_;
    return dom_.end_object();
  }
  bool start_array(std::size_t elements) override { return Enter() && dom_.start_array(elements); }
  bool end_array() override {
    --depth_;
    return dom_.end_array();
  }
  bool parse_error(std::size_t position, const std::string& /*last_token*/,
                   const nlohmann::detail::exception& /*ex*/) override {
    // Not ex.what(): it quotes the last token, which may be part of a secret.
    return Fail("malformed JSON near byte " + std::to_string(position));
  }

  const std::string& error() const { return error_; }

 private:
  bool Enter() {
    if (++depth_ > kMaxJsonDepth) {
      return Fail("JSON nested deeper than " + std::to_string(kMaxJsonDepth) + " levels");
    }
    return true;
  }
  bool Fail(std::string message) {
    if (error_.empty()) error_ = std::move(message);
    return false;
  }

  nlohmann::detail::json_sax_dom_parser<json> dom_;
  size_t depth_ = 0;
  std::vector<std::set<std::string>> keys_;
  std::string error_;
};

Result<json> ParseStrictObject(std::string_view payload, std::string_view what) {
  json j;
  StrictDomSax sax(j);
  if (!json::sax_parse(payload, &sax, json::input_format_t::json, /*strict=*/true,
                       /*ignore_comments=*/false)) {
    WipeJsonStrings(j);  // what was built before the error may hold a secret
    return Invalid(std::string(what) + ": " +
                   (sax.error().empty() ? std::string("malformed JSON") : sax.error()));
  }
  if (!j.is_object()) {
    WipeJsonStrings(j);
    return Invalid(std::string(what) + " is not a JSON object");
  }
  return j;
}

// A JSON integer in [0, max]. nlohmann stores non-negative literals as unsigned and negative ones
// as signed; "7.0" and "7e0" are floats and rejected.
bool GetUint(const json& v, uint64_t max, uint64_t* out) {
  if (v.is_number_unsigned()) {
    const auto u = v.get<uint64_t>();
    if (u > max) return false;
    *out = u;
    return true;
  }
  if (v.is_number_integer()) {
    const auto s = v.get<int64_t>();
    if (s < 0 || static_cast<uint64_t>(s) > max) return false;
    *out = static_cast<uint64_t>(s);
    return true;
  }
  return false;
}

bool IsValidErrorName(std::string_view name) {
  if (name.empty() || name.size() > kMaxErrorNameLen) return false;
  for (char c : name) {
    const bool alnum = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
    if (!alnum) return false;
  }
  return true;
}

Status ValidateOnBehalfOf(const OnBehalfOf& o) {
  if (o.uid == std::numeric_limits<uint32_t>::max()) return Invalid("OnBehalfOf.Uid is out of range");
  if (o.gid == std::numeric_limits<uint32_t>::max()) return Invalid("OnBehalfOf.Gid is out of range");
  if (o.pid <= 0) return Invalid("OnBehalfOf.Pid is out of range");
  if (!o.path.empty() && !IsCanonicalVolumePath(o.path)) {
    return Invalid("OnBehalfOf.Path is not a canonical absolute path");
  }
  return Status::Ok();
}

Result<OnBehalfOf> ParseOnBehalfOf(const json& j) {
  if (!j.is_object()) return Invalid("OnBehalfOf is not an object");
  OnBehalfOf o;
  bool have_uid = false, have_gid = false, have_pid = false;
  for (const auto& [k, v] : j.items()) {
    uint64_t n = 0;
    if (k == "Uid") {
      if (!GetUint(v, std::numeric_limits<uint32_t>::max() - 1, &n)) {
        return Invalid("OnBehalfOf.Uid must be an integer in [0, 4294967294]");
      }
      o.uid = static_cast<uint32_t>(n);
      have_uid = true;
    } else if (k == "Gid") {
      if (!GetUint(v, std::numeric_limits<uint32_t>::max() - 1, &n)) {
        return Invalid("OnBehalfOf.Gid must be an integer in [0, 4294967294]");
      }
      o.gid = static_cast<uint32_t>(n);
      have_gid = true;
    } else if (k == "Pid") {
      if (!GetUint(v, std::numeric_limits<int32_t>::max(), &n) || n == 0) {
        return Invalid("OnBehalfOf.Pid must be an integer in [1, 2147483647]");
      }
      o.pid = static_cast<int32_t>(n);
      have_pid = true;
    } else if (k == "Path") {
      if (!v.is_string()) return Invalid("OnBehalfOf.Path must be a string");
      o.path = v.get_ref<const std::string&>();
      if (!IsCanonicalVolumePath(o.path)) {
        return Invalid("OnBehalfOf.Path is not a canonical absolute path");
      }
    } else {
      return Invalid("unknown field OnBehalfOf." + Quote(k));
    }
  }
  if (!have_uid) return Invalid("OnBehalfOf.Uid is missing");
  if (!have_gid) return Invalid("OnBehalfOf.Gid is missing");
  if (!have_pid) return Invalid("OnBehalfOf.Pid is missing");
  return o;
}

Result<ErrorInfo> ParseErrorInfo(const json& j) {
  if (!j.is_object()) return Invalid("Error is not an object");
  ErrorInfo e;
  bool have_name = false, have_message = false;
  for (const auto& [k, v] : j.items()) {
    if (k == "Name") {
      if (!v.is_string() || !IsValidErrorName(v.get_ref<const std::string&>())) {
        return Invalid("Error.Name must be 1-128 ASCII letters and digits");
      }
      e.name = v.get_ref<const std::string&>();
      have_name = true;
    } else if (k == "Message") {
      if (!v.is_string()) return Invalid("Error.Message must be a string");
      e.message = v.get_ref<const std::string&>();
      have_message = true;
    } else {
      return Invalid("unknown field Error." + Quote(k));
    }
  }
  if (!have_name) return Invalid("Error.Name is missing");
  if (!have_message) return Invalid("Error.Message is missing");
  return e;
}

// dump() throws type_error 316 on a string that is not UTF-8; that is the caller's bad input.
Result<std::string> Dump(const json& j) {
  try {
    return j.dump();
  } catch (const json::exception&) {
    return Invalid("message contains a string that is not valid UTF-8");
  }
}

}  // namespace

Result<Request> ParseRequest(std::string_view payload, uint64_t* request_id) {
  if (request_id != nullptr) *request_id = 0;
  try {
    KMSFS_ASSIGN_OR_RETURN(json j, ParseStrictObject(payload, "request"));
    // RequestId first, so every later error can still be addressed to it.
    const auto id = j.find("RequestId");
    if (id == j.end()) return Invalid("RequestId is missing");
    Request r;
    if (!GetUint(*id, std::numeric_limits<uint64_t>::max(), &r.request_id)) {
      return Invalid("RequestId must be a non-negative integer");
    }
    if (request_id != nullptr) *request_id = r.request_id;
    bool have_op = false;
    for (auto& [k, v] : j.items()) {
      if (k == "RequestId") continue;
      if (k == "Op") {
        if (!v.is_string()) return Invalid("Op must be a string");
        const auto op = OpFromName(v.get_ref<const std::string&>());
        // The value is not quoted (values may be secrets; keys are quoted, values never).
        if (!op) return Invalid("Op is not a known operation name (see docs/protocol.md)");
        r.op = *op;
        have_op = true;
      } else if (k == "Params") {
        if (!v.is_object()) return Invalid("Params must be an object");
        r.params = std::move(v);
      } else if (k == "OnBehalfOf") {
        KMSFS_ASSIGN_OR_RETURN(r.on_behalf_of, ParseOnBehalfOf(v));
      } else {
        return Invalid("unknown field " + Quote(k));
      }
    }
    if (!have_op) return Invalid("Op is missing");
    return r;
  } catch (const json::exception&) {
    // Unreachable with the checks above; kept so a library surprise cannot escape as a throw.
    return Invalid("request: malformed message");
  }
}

Result<Response> ParseResponse(std::string_view payload) {
  try {
    KMSFS_ASSIGN_OR_RETURN(json j, ParseStrictObject(payload, "response"));
    Response r;
    bool have_id = false, have_result = false;
    for (auto& [k, v] : j.items()) {
      if (k == "RequestId") {
        if (!GetUint(v, std::numeric_limits<uint64_t>::max(), &r.request_id)) {
          return Invalid("RequestId must be a non-negative integer");
        }
        have_id = true;
      } else if (k == "Result") {
        if (!v.is_object()) return Invalid("Result must be an object");
        r.result = std::move(v);
        have_result = true;
      } else if (k == "Error") {
        KMSFS_ASSIGN_OR_RETURN(r.error, ParseErrorInfo(v));
      } else {
        return Invalid("unknown field " + Quote(k));
      }
    }
    if (!have_id) return Invalid("RequestId is missing");
    if (have_result == r.error.has_value()) {
      return Invalid("a response has exactly one of Result and Error");
    }
    if (r.error) r.result = json::object();
    return r;
  } catch (const json::exception&) {
    return Invalid("response: malformed message");
  }
}

// Both serializers assemble the envelope by hand around one dump() of Params/Result instead of
// copying that object into a bigger json: the object may hold a secret (Plaintext), and every copy
// is one more heap block to wipe. The envelope's own fields hold no secrets.
Result<std::string> SerializeRequest(const Request& request) {
  if (!request.params.is_object()) return Invalid("Params must be an object");
  std::string obo;
  if (request.on_behalf_of) {
    const OnBehalfOf& o = *request.on_behalf_of;
    KMSFS_RETURN_IF_ERROR(ValidateOnBehalfOf(o));
    json j = {{"Uid", o.uid}, {"Gid", o.gid}, {"Pid", o.pid}};
    if (!o.path.empty()) j["Path"] = o.path;
    KMSFS_ASSIGN_OR_RETURN(obo, Dump(j));
  }
  KMSFS_ASSIGN_OR_RETURN(std::string params, Dump(request.params));
  ScopeExit wipe_params([&params] { crypto::Wipe(params); });
  const std::string id = std::to_string(request.request_id);
  const std::string_view op = OpName(request.op);
  std::string out;
  out.reserve(64 + op.size() + id.size() + obo.size() + params.size());
  out += R"({"Op":")";
  out += op;  // names are [A-Za-z]+: no escaping needed
  out += R"(","RequestId":)";
  out += id;
  if (!obo.empty()) {
    out += R"(,"OnBehalfOf":)";
    out += obo;
  }
  out += R"(,"Params":)";
  out += params;
  out += '}';
  return out;
}

Result<std::string> SerializeResponse(const Response& response) {
  const std::string id = std::to_string(response.request_id);
  std::string body;
  if (response.error) {
    if (!IsValidErrorName(response.error->name)) {
      return Invalid("Error.Name must be 1-128 ASCII letters and digits");
    }
    KMSFS_ASSIGN_OR_RETURN(body, Dump(json{{"Name", response.error->name},
                                           {"Message", response.error->message}}));
  } else {
    if (!response.result.is_object()) return Invalid("Result must be an object");
    KMSFS_ASSIGN_OR_RETURN(body, Dump(response.result));
  }
  ScopeExit wipe_body([&body] { crypto::Wipe(body); });
  std::string out;
  out.reserve(32 + id.size() + body.size());
  out += R"({"RequestId":)";
  out += id;
  out += response.error ? R"(,"Error":)" : R"(,"Result":)";
  out += body;
  out += '}';
  return out;
}

void WipeJsonStrings(json& value) {
  std::vector<json*> todo{&value};
  while (!todo.empty()) {
    json* j = todo.back();
    todo.pop_back();
    if (j->is_string()) {
      crypto::Wipe(j->get_ref<std::string&>());
    } else if (j->is_structured()) {
      for (auto& child : *j) todo.push_back(&child);
    }
  }
}

bool IsCanonicalVolumePath(std::string_view path) {
  if (path.empty() || path.size() > kMaxPathLen || path[0] != '/') return false;
  if (!IsValidUtf8(path)) return false;
  if (path == "/") return true;
  if (path.back() == '/') return false;
  // Walk the components after the leading '/'.
  size_t start = 1;
  while (start <= path.size()) {
    size_t end = path.find('/', start);
    if (end == std::string_view::npos) end = path.size();
    const std::string_view comp = path.substr(start, end - start);
    if (comp.empty() || comp == "." || comp == "..") return false;
    if (comp.find('\0') != std::string_view::npos) return false;
    start = end + 1;
  }
  return true;
}

std::string ToWirePath(std::string_view raw) {
  std::string out;
  out.reserve(raw.size());
  for (size_t i = 0; i < raw.size();) {
    const size_t n = Utf8SequenceLen(raw, i);
    if (n == 0) {
      out += "\xEF\xBF\xBD";  // U+FFFD REPLACEMENT CHARACTER
      ++i;
    } else {
      out.append(raw.substr(i, n));
      i += n;
    }
  }
  return out;
}

}  // namespace kmsfs::ipc
