// Fuzzes the strict message parsers: ParseRequest/ParseResponse must never crash or throw, and
// whatever they accept must serialize, parse back to the same message, and serialize identically.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "common/ipc/message.h"

namespace {

void Require(bool ok) {
  if (!ok) std::abort();
}

void CheckRequest(std::string_view text) {
  uint64_t id = 0;
  auto req = kmsfs::ipc::ParseRequest(text, &id);
  if (!req.ok()) {
    Require(req.error().code() == kmsfs::Code::kInvalidArgument);
    return;
  }
  Require(id == req->request_id);
  Require(req->params.is_object());
  auto text2 = kmsfs::ipc::SerializeRequest(*req);
  Require(text2.ok());
  auto again = kmsfs::ipc::ParseRequest(*text2);
  Require(again.ok());
  Require(again->op == req->op);
  Require(again->request_id == req->request_id);
  Require(again->params == req->params);
  Require(again->on_behalf_of == req->on_behalf_of);
  auto text3 = kmsfs::ipc::SerializeRequest(*again);
  Require(text3.ok() && *text3 == *text2);
}

void CheckResponse(std::string_view text) {
  auto resp = kmsfs::ipc::ParseResponse(text);
  if (!resp.ok()) {
    Require(resp.error().code() == kmsfs::Code::kInvalidArgument);
    return;
  }
  auto text2 = kmsfs::ipc::SerializeResponse(*resp);
  Require(text2.ok());
  auto again = kmsfs::ipc::ParseResponse(*text2);
  Require(again.ok());
  Require(again->request_id == resp->request_id);
  Require(again->error == resp->error);
  Require(again->result == resp->result);
  auto text3 = kmsfs::ipc::SerializeResponse(*again);
  Require(text3.ok() && *text3 == *text2);
  if (resp->error) {
    // The client-side conversion must cope with any accepted error object.
    const kmsfs::Error e = kmsfs::ipc::FromErrorInfo(*resp->error);
    Require(e.code() != kmsfs::Code::kOk);
    (void)kmsfs::ipc::ErrorNameOf(e);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  CheckRequest(text);
  CheckResponse(text);
  // Paths reach policy matching: the wire form of any bytes must be valid UTF-8 and stable.
  const std::string wire = kmsfs::ipc::ToWirePath(text);
  Require(kmsfs::ipc::ToWirePath(wire) == wire);
  return 0;
}
