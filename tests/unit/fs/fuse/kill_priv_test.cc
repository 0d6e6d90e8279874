// kill_priv: the INIT reply amendment (FUSE_HANDLE_KILLPRIV_V2) and the kill flags read from raw
// requests, on the kernel's byte layout (<linux/fuse.h>), through pipes instead of /dev/fuse.
#include "fs/fuse/kill_priv.h"

#include <fcntl.h>
#include <linux/fuse.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "tests/catch.h"

namespace kmsfs::fs {
namespace {

// A request as the kernel sends it: header, then `arg`.
template <class Arg>
std::vector<unsigned char> Request(uint32_t opcode, uint64_t unique, const Arg& arg) {
  std::vector<unsigned char> buf(sizeof(fuse_in_header) + sizeof(Arg));
  fuse_in_header in{};
  in.len = static_cast<uint32_t>(buf.size());
  in.opcode = opcode;
  in.unique = unique;
  in.nodeid = 1;
  std::memcpy(buf.data(), &in, sizeof(in));
  std::memcpy(buf.data() + sizeof(in), &arg, sizeof(arg));
  return buf;
}

// One pipe; closed at the end.
struct Pipe {
  Pipe() { REQUIRE(::pipe(fd) == 0); }
  ~Pipe() {
    ::close(fd[0]);
    ::close(fd[1]);
  }
  int fd[2];
};

// Feeds `request` through DeviceRead, as libfuse's receive would.
void Receive(const std::vector<unsigned char>& request) {
  Pipe p;
  REQUIRE(::write(p.fd[1], request.data(), request.size()) ==
          static_cast<ssize_t>(request.size()));
  std::vector<unsigned char> buf(request.size() + 64);
  REQUIRE(DeviceRead(p.fd[0], buf.data(), buf.size(), nullptr) ==
          static_cast<ssize_t>(request.size()));
  REQUIRE(std::memcmp(buf.data(), request.data(), request.size()) == 0);  // passed on as read
}

// Sends a reply with `unique`, `error` and `init` through DeviceWritev; returns the flags the
// "kernel" received, and checks that nothing else changed.
uint32_t Reply(uint64_t unique, int32_t error, const fuse_init_out& init) {
  fuse_out_header out{};
  out.len = sizeof(out) + sizeof(init);
  out.error = error;
  out.unique = unique;
  fuse_init_out payload = init;
  iovec iov[2] = {{&out, sizeof(out)}, {&payload, sizeof(payload)}};
  Pipe p;
  REQUIRE(DeviceWritev(p.fd[1], iov, 2, nullptr) == static_cast<ssize_t>(out.len));
  unsigned char got[sizeof(out) + sizeof(init)];
  REQUIRE(::read(p.fd[0], got, sizeof(got)) == static_cast<ssize_t>(sizeof(got)));
  REQUIRE(std::memcmp(got, &out, sizeof(out)) == 0);
  fuse_init_out sent;
  std::memcpy(&sent, got + sizeof(out), sizeof(sent));
  REQUIRE(std::memcmp(&payload, &init, sizeof(init)) == 0);  // the caller's buffer is untouched
  const uint32_t flags = sent.flags;
  sent.flags = init.flags;
  CHECK(std::memcmp(&sent, &init, sizeof(sent)) == 0);  // only the flags may differ
  return flags;
}

fuse_init_in InitIn(uint32_t flags) {
  fuse_init_in in{};
  in.major = 7;
  in.minor = 38;
  in.max_readahead = 1u << 20;
  in.flags = flags;
  return in;
}

fuse_init_out InitOut() {
  fuse_init_out out{};
  out.major = 7;
  out.minor = 36;
  out.flags = FUSE_ASYNC_READ | FUSE_ATOMIC_O_TRUNC;
  out.max_write = 1u << 20;
  return out;
}

TEST_CASE("kill_priv: the INIT reply gets FUSE_HANDLE_KILLPRIV_V2 only when the kernel offered it",
          "[fs][fuse][kill_priv]") {
  const fuse_init_out init = InitOut();

  SECTION("offered: the successful reply to that INIT is amended, once") {
    Receive(Request(FUSE_INIT, 2, InitIn(FUSE_ASYNC_READ | FUSE_HANDLE_KILLPRIV_V2)));
    CHECK(Reply(2, 0, init) == (init.flags | FUSE_HANDLE_KILLPRIV_V2));
    CHECK(Reply(2, 0, init) == init.flags);  // a later reply with the same bytes: untouched
  }
  SECTION("not offered: the reply goes out as libfuse made it") {
    Receive(Request(FUSE_INIT, 2, InitIn(FUSE_ASYNC_READ)));
    CHECK(Reply(2, 0, init) == init.flags);
  }
  SECTION("another request's reply, or an error reply, is never amended") {
    Receive(Request(FUSE_INIT, 2, InitIn(FUSE_HANDLE_KILLPRIV_V2)));
    CHECK(Reply(4, 0, init) == init.flags);    // not INIT's unique
    CHECK(Reply(2, -EPROTO, init) == init.flags);  // INIT refused
  }
  SECTION("an INIT too short to hold its flags arms nothing") {
    std::vector<unsigned char> shortened = Request(FUSE_INIT, 2, InitIn(FUSE_HANDLE_KILLPRIV_V2));
    shortened.resize(sizeof(fuse_in_header) + 8);
    Receive(shortened);
    CHECK(Reply(2, 0, init) == init.flags);
  }
}

TEST_CASE("kill_priv: the kill flags libfuse drops are read from the current raw request",
          "[fs][fuse][kill_priv]") {
  CHECK_FALSE(CurrentRequestKillsSuidGid());  // outside any request

  fuse_write_in w{};
  w.size = 4;
  w.write_flags = FUSE_WRITE_KILL_SUIDGID;
  auto write = Request(FUSE_WRITE, 10, w);
  {
    const CurrentRequestScope scope(write.data(), write.size());
    CHECK(CurrentRequestKillsSuidGid());
  }
  CHECK_FALSE(CurrentRequestKillsSuidGid());  // the scope is over
  w.write_flags = FUSE_WRITE_CACHE;
  write = Request(FUSE_WRITE, 10, w);
  {
    const CurrentRequestScope scope(write.data(), write.size());
    CHECK_FALSE(CurrentRequestKillsSuidGid());
  }

  fuse_open_in o{};
  o.flags = O_WRONLY | O_TRUNC;
  o.open_flags = FUSE_OPEN_KILL_SUIDGID;
  const auto open = Request(FUSE_OPEN, 12, o);
  {
    const CurrentRequestScope scope(open.data(), open.size());
    CHECK(CurrentRequestKillsSuidGid());
  }
  {  // cut short before open_flags: no flag is invented
    const CurrentRequestScope scope(open.data(), open.size() - 1);
    CHECK_FALSE(CurrentRequestKillsSuidGid());
  }

  fuse_create_in c{};
  c.flags = O_WRONLY | O_CREAT | O_TRUNC;
  c.open_flags = FUSE_OPEN_KILL_SUIDGID;
  const auto create = Request(FUSE_CREATE, 14, c);
  {
    const CurrentRequestScope scope(create.data(), create.size());
    CHECK(CurrentRequestKillsSuidGid());
  }

  // The same bits under another opcode mean nothing.
  fuse_setattr_in s{};
  s.valid = FATTR_SIZE | FATTR_KILL_SUIDGID;
  const auto setattr = Request(FUSE_SETATTR, 16, s);
  {
    const CurrentRequestScope scope(setattr.data(), setattr.size());
    CHECK_FALSE(CurrentRequestKillsSuidGid());  // SETATTR's flag reaches us through libfuse
  }
  {
    const CurrentRequestScope scope(nullptr, 0);  // a spliced request
    CHECK_FALSE(CurrentRequestKillsSuidGid());
  }
}

}  // namespace
}  // namespace kmsfs::fs
