// Reading /proc/self/mountinfo, shared by the maintenance commands (fsck, reencrypt).
#pragma once

#include <string>
#include <string_view>

namespace kmsfs::fs {

// A mountinfo field as it names a path: the kernel writes space, tab, newline and backslash as
// \ooo (three octal digits); anything else, including a backslash not followed by three octal
// digits, is kept as it is.
std::string UnescapeMountinfo(std::string_view field);

}  // namespace kmsfs::fs
