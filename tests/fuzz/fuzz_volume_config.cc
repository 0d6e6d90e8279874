// libFuzzer target: kmsfs.conf parsing (common/format), including nlohmann_json underneath.
// Properties: no exception escapes, and whatever parses serializes, re-parses to the same
// config, serializes to the same text again, and has a MAC input.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "common/base/check.h"
#include "common/format/volume_config.h"

namespace kmsfs::format {
namespace {

int FuzzOne(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto config = ParseVolumeConfig(text);
  if (!config.ok()) {
    const auto code = config.error().code();
    KMSFS_CHECK(code == kmsfs::Code::kCorrupt || code == kmsfs::Code::kFailedPrecondition);
    return 0;
  }
  KMSFS_CHECK(ValidateVolumeConfig(*config).ok());
  KMSFS_CHECK(VolumeConfigMacInput(*config).ok());
  auto json = SerializeVolumeConfig(*config);
  KMSFS_CHECK(json.ok());
  auto again = ParseVolumeConfig(*json);
  KMSFS_CHECK(again.ok() && *again == *config);
  auto json2 = SerializeVolumeConfig(*again);
  KMSFS_CHECK(json2.ok() && *json2 == *json);
  return 0;
}

}  // namespace
}  // namespace kmsfs::format

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return kmsfs::format::FuzzOne(data, size);
}
