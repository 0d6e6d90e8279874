// `-o` handling of kmsfs mount / mount.kmsfs: ours out, fstab-only dropped, the rest to FUSE.
// In-process (no mount needed); it lives with the fs integration tests because unit_fs links
// fs/core only.
#include <catch2/catch.hpp>

#include "fs/fuse/mount_options.h"

namespace kmsfs::fs {
namespace {

TEST_CASE("mount options: ours, fstab-only and FUSE's", "[fs][options]") {
  auto r = SplitMountOptions(
      {"defaults,allow_other,socket=/run/k.sock,nofail,_netdev,x-systemd.automount",
       "ro,key_timeout=2.5,noauto,user,rw,keyd_uid=990,comment=x,nodev,default_permissions"});
  REQUIRE(r.ok());
  CHECK(r->fuse == std::vector<std::string>{"allow_other", "ro", "nodev"});
  CHECK(r->socket == "/run/k.sock");
  CHECK(r->key_timeout == std::chrono::milliseconds(2500));
  CHECK(r->keyd_uid == uid_t{990});
  CHECK_FALSE(r->debug);

  auto escaped = SplitMountOptions({"socket=/tmp/a\\,b.sock,fsname=x\\,y"});
  REQUIRE(escaped.ok());
  CHECK(escaped->socket == "/tmp/a,b.sock");
  CHECK(escaped->fuse == std::vector<std::string>{"fsname=x\\,y"});  // libfuse unescapes

  CHECK(SplitMountOptions({"debug"})->debug);
  CHECK_FALSE(SplitMountOptions({"key_timeout=0"}).ok());
  CHECK_FALSE(SplitMountOptions({"key_timeout=abc"}).ok());
  CHECK_FALSE(SplitMountOptions({"key_timeout=1e9"}).ok());
  CHECK_FALSE(SplitMountOptions({"keyd_uid=-1"}).ok());
  CHECK_FALSE(SplitMountOptions({"socket="}).ok());
  CHECK(SplitMountOptions({""})->fuse.empty());
}

TEST_CASE("mount options: key_revalidate", "[fs][options][revoke]") {
  auto r = SplitMountOptions({"allow_other,key_revalidate=0.25"});
  REQUIRE(r.ok());
  CHECK(r->key_revalidate == std::chrono::milliseconds(250));
  CHECK(r->fuse == std::vector<std::string>{"allow_other"});
  CHECK_FALSE(SplitMountOptions({"allow_other"})->key_revalidate.has_value());
  // Revalidation cannot be switched off: 0 is refused like any other malformed value.
  CHECK_FALSE(SplitMountOptions({"key_revalidate=0"}).ok());
  CHECK_FALSE(SplitMountOptions({"key_revalidate=-1"}).ok());
  CHECK_FALSE(SplitMountOptions({"key_revalidate=5s"}).ok());
  CHECK_FALSE(SplitMountOptions({"key_revalidate=3601"}).ok());
}

}  // namespace
}  // namespace kmsfs::fs
