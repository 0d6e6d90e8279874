#include "keyd/policy/policy.h"

#include <utility>

#include "keyd/policy/policy_data.h"

namespace kmsfs::keyd {

CompiledPolicy::CompiledPolicy(std::shared_ptr<const policy_internal::PolicyData> data)
    : data_(std::move(data)) {
  KMSFS_CHECK(data_ != nullptr);
}

size_t CompiledPolicy::statement_count() const { return data_->statements.size(); }

const std::string& CompiledPolicy::id() const { return data_->id; }

std::string DefaultKeyPolicy() {
  return R"({
  "Version": "2012-10-17",
  "Id": "kmsfs-default-key-policy",
  "Statement": [
    {
      "Sid": "RootAdministersAndUsesTheKey",
      "Effect": "Allow",
      "Principal": {"Uid": [0]},
      "Action": "kms:*",
      "Resource": "*"
    }
  ]
}
)";
}

std::string VolumeOwnerPolicy(uint32_t owner_uid) {
  KMSFS_CHECK(owner_uid != kNoId);
  return R"({
  "Version": "2012-10-17",
  "Id": "kmsfs-volume-owner-policy",
  "Statement": [
    {
      "Sid": "RootAdministersAndUsesTheKey",
      "Effect": "Allow",
      "Principal": {"Uid": [0]},
      "Action": "kms:*",
      "Resource": "*"
    },
    {
      "Sid": "VolumeOwnerUsesTheKey",
      "Effect": "Allow",
      "Principal": {"Uid": [)" +
         std::to_string(owner_uid) + R"(]},
      "Action": [
        "kms:Decrypt",
        "kms:GenerateDataKey*",
        "kms:ReEncrypt*",
        "kms:DescribeKey"
      ],
      "Resource": "*"
    }
  ]
}
)";
}

}  // namespace kmsfs::keyd
