// fsck refuses a mounted volume: FindKmsfsMount over /proc/self/mountinfo text.
#include <string>

#include "fs/fsck/fsck.h"
#include "tests/catch.h"

namespace kmsfs::fs::fsck {
namespace {

TEST_CASE("fsck: FindKmsfsMount finds a kmsfs mount of the cipher directory only", "[fsck]") {
  const std::string info =
      "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
      "90 22 0:50 / /srv/data rw,nosuid,nodev,relatime shared:40 - fuse.kmsfs /srv/data.cipher "
      "rw,user_id=0,group_id=0,default_permissions\n"
      "91 22 0:51 / /mnt/with\\040space rw,relatime - fuse.kmsfs /srv/a\\040b.cipher rw\n"
      "92 22 0:52 / /mnt/other rw,relatime - fuse.sshfs /srv/x.cipher rw\n"
      "93 22 0:53 / /mnt/bind rw,relatime - ext4 /srv/y.cipher rw\n";
  CHECK(FindKmsfsMount(info, "/srv/data.cipher") == std::optional<std::string>("/srv/data"));
  CHECK(FindKmsfsMount(info, "/srv/a b.cipher") == std::optional<std::string>("/mnt/with space"));
  CHECK_FALSE(FindKmsfsMount(info, "/srv/x.cipher"));  // not kmsfs
  CHECK_FALSE(FindKmsfsMount(info, "/srv/y.cipher"));
  CHECK_FALSE(FindKmsfsMount(info, "/srv/data"));
  CHECK_FALSE(FindKmsfsMount("", "/srv/data.cipher"));
  CHECK_FALSE(FindKmsfsMount("garbage line\n- fuse.kmsfs\n", "/srv/data.cipher"));
}

TEST_CASE("fsck: exit codes combine as e2fsck's", "[fsck]") {
  Report r;
  CHECK(r.ExitCode() == 0);
  Finding repaired;
  repaired.state = Finding::State::kRepaired;
  r.findings.push_back(repaired);
  CHECK(r.ExitCode() == 1);
  Finding left;
  left.state = Finding::State::kUnrepairable;
  r.findings.push_back(left);
  CHECK(r.ExitCode() == 5);
  r.not_checked.push_back("/f: keyd refused the file's key");
  CHECK(r.ExitCode() == 13);
  Report found;
  found.findings.push_back(Finding{});  // found without --repair
  CHECK(found.ExitCode() == 4);
}

}  // namespace
}  // namespace kmsfs::fs::fsck
