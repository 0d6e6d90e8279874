// Key policies: parse and validate a JSON key policy once, then evaluate requests against it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "common/base/status.h"
#include "keyd/policy/action.h"
#include "keyd/policy/authz.h"
#include "keyd/policy/name_resolver.h"

namespace kmsfs::keyd {

// Largest policy document accepted, in bytes (as AWS KMS).
inline constexpr size_t kMaxPolicyBytes = 32 * 1024;

namespace policy_internal {
struct PolicyData;
}

// A validated, compiled key policy. Immutable after Parse and cheap to copy (the compiled form is
// shared), so the service can cache one per key and evaluate it from any number of threads.
// The language is specified in docs/policy.md.
class CompiledPolicy {
 public:
  // Parses and validates a policy document. kInvalidArgument on any problem, with the message
  // "<location>: <problem>", e.g.
  //   Statement[2].Condition.StringLik: unknown condition operator
  //   Statement[0].Action[1]: unknown action "kms:Decrpyt"
  // Rejects: documents over kMaxPolicyBytes, invalid JSON or UTF-8, duplicate object keys,
  // unknown fields/actions/operators/condition keys/principal types, wrong types, an empty
  // Statement array, duplicate Sids, and values that could never match (such as a relative path
  // pattern). Never throws.
  static Result<CompiledPolicy> Parse(std::string_view json_text);

  // Number of statements, and the policy's optional "Id".
  size_t statement_count() const;
  const std::string& id() const;

  const policy_internal::PolicyData& data() const { return *data_; }

 private:
  explicit CompiledPolicy(std::shared_ptr<const policy_internal::PolicyData> data);
  std::shared_ptr<const policy_internal::PolicyData> data_;  // never null
};

// Decides `request` under `policy`: default deny; any applicable Deny statement wins over every
// Allow; otherwise the first applicable Allow statement allows. Fails closed on doubt: a name that
// cannot be resolved because the lookup failed, a caller attribute keyd could not determine, or a
// negated condition on an absent key makes an Allow statement not apply and a Deny statement apply.
// Requests with an invalid path (see NormalizeRequestPath) or an unset uid/gid are denied before
// any statement is consulted. `resolver` is called only for statements that name users or groups.
// Thread-safe; noexcept (an internal failure, e.g. bad_alloc, yields a Deny).
Decision Evaluate(const CompiledPolicy& policy, const AuthzRequest& request,
                  const NameResolver& resolver) noexcept;

// The lockout safety check of PutKeyPolicy: OK if `new_policy` allows the caller described by
// `caller` (its action is replaced by kms:PutKeyPolicy) to put a policy again; otherwise
// kInvalidArgument saying so (AWS: MalformedPolicyDocumentException). The service skips this call
// when the request sets BypassPolicyLockoutSafetyCheck. The message never contains the path.
Status CheckLockout(const CompiledPolicy& new_policy, const AuthzRequest& caller,
                    const NameResolver& resolver);

// The policy of a newly created key: root (uid 0) may administer and use the key, nobody else.
std::string DefaultKeyPolicy();

// The policy `kmsfs init` gives a volume's key: root administers and uses the key; `owner_uid`
// may use it for the filesystem (kms:Decrypt, kms:GenerateDataKey*, kms:ReEncrypt*,
// kms:DescribeKey). REQUIRES: owner_uid != kNoId.
std::string VolumeOwnerPolicy(uint32_t owner_uid);

}  // namespace kmsfs::keyd
