// The transport-agnostic entry point of the key service: one KMS operation in, one reply out.
#pragma once

#include <nlohmann/json.hpp>

#include <functional>
#include <string>
#include <string_view>

#include "keyd/service/caller_context.h"

namespace kmsfs::keyd {

// Either `result` (the AWS-shaped response object) or an AWS-style error name + message.
struct ServiceReply {
  nlohmann::json result = nlohmann::json::object();
  std::string error_name;     // "NotFoundException", ... empty on success
  std::string error_message;  // says what to do; never secrets

  bool ok() const { return error_name.empty(); }
  static ServiceReply Error(std::string name, std::string message) {
    ServiceReply r;
    r.error_name = std::move(name);
    r.error_message = std::move(message);
    return r;
  }
};

// Implemented by KmsService; the server depends only on this interface. Thread-safe.
class KmsHandler {
 public:
  virtual ~KmsHandler() = default;
  // `op` is the operation name ("Decrypt"); `params` the request's Params object.
  virtual ServiceReply Handle(std::string_view op, const nlohmann::json& params,
                              const CallerContext& caller) = 0;
  // As Handle, but the reply goes to `done`, called exactly once, possibly later and on another
  // thread (after an audit record became durable). Default: Handle, then `done`, on this thread.
  virtual void HandleAsync(std::string_view op, const nlohmann::json& params,
                           const CallerContext& caller, std::function<void(ServiceReply)> done) {
    done(Handle(op, params, caller));
  }
};

}  // namespace kmsfs::keyd
