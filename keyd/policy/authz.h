// AuthzRequest and Decision: what the policy engine is asked, and what it answers.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "keyd/policy/action.h"

namespace kmsfs::keyd {

// uid/gid value meaning "not set"; ((uid_t)-1 is never a real id). Evaluate denies such a request
// outright, so a caller that forgets to fill in the identity is nobody, never root.
inline constexpr uint32_t kNoId = 0xFFFFFFFFu;
// Action value meaning "not set"; Evaluate denies it, so a forgotten action is never some real one.
inline constexpr Action kNoAction = static_cast<Action>(0xFF);

// One authorization question: may this caller perform `action` on the key whose policy is asked?
// The service fills it from trusted sources only (SO_PEERCRED, /proc, the forwarder's verified
// context) — never from what a client claims. Optional fields that are nullopt or empty are
// "absent" for conditions (see docs/policy.md, "Missing keys").
struct AuthzRequest {
  Action action = kNoAction;
  uint32_t uid = kNoId;
  uint32_t gid = kNoId;  // primary gid
  // The caller's supplementary groups as the kernel sees them. When nullopt, group membership
  // comes from the group database (NameResolver::GroupsOf) instead.
  std::optional<std::vector<uint32_t>> supplementary_gids;
  int32_t pid = 0;  // for the audit trail; no condition uses it
  std::optional<std::string>
      executable;                   // kmsfs:Executable, e.g. "/usr/lib/postgresql/15/bin/postgres"
  std::optional<std::string> unit;  // kmsfs:Unit, the systemd unit from the caller's cgroup
  std::optional<std::string> path;  // kmsfs:Path, path inside the volume; checked, see glob.h
  std::optional<std::string> volume;  // kmsfs:Volume, the volume id
  bool forwarded = false;             // kmsfs:Forwarded: came via a trusted forwarder
  std::map<std::string, std::string> encryption_context;  // kms:EncryptionContext:<name>
};

enum class Effect : uint8_t { kAllow, kDeny };

// The answer. Allow only when some statement allowed and no Deny statement applied.
struct Decision {
  Effect effect = Effect::kDeny;
  // True when a statement decided (an Allow, or an explicit Deny); false for the default deny and
  // for requests refused before any statement was consulted (bad path, identity not set).
  // (Not named `explicit`: that is a C++ keyword.)
  bool is_explicit = false;
  // The deciding statement: its Sid, or "Statement[i]" when it has none; empty if none decided.
  std::string sid;
  int statement_index = -1;  // index into the policy's Statement array, -1 if none decided
  // One human-readable sentence for the audit trail and `kmsctl`, e.g.
  // "no statement allows kms:Decrypt for uid 1000 on /bob/x". It includes the request path, which
  // is a plaintext file name: record it where the audit trail may, never in an Error message or
  // a filesystem log line (STYLE.md §3).
  std::string reason;

  bool allowed() const { return effect == Effect::kAllow; }
};

}  // namespace kmsfs::keyd
