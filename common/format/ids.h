// Id128: the fixed-size random identifiers the on-disk formats carry (volume, file, directory ids).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

namespace kmsfs::format {

// 128 random bits from the CSPRNG. Writers never produce the all-zero id, so readers may treat
// an all-zero id as a torn or never-completed write (see docs/format.md).
inline constexpr size_t kId128Len = 16;
using Id128 = std::array<uint8_t, kId128Len>;

}  // namespace kmsfs::format
