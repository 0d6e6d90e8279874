#include "keyd/store/recovery.h"

#include <array>
#include <cstring>

#include "common/crypto/aead.h"
#include "common/crypto/hash.h"
#include "common/crypto/hkdf.h"
#include "common/crypto/random.h"

namespace kmsfs::keyd {
namespace {

constexpr std::string_view kAlphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";  // Crockford
constexpr std::string_view kChecksumLabel = "kmsfs recovery code v1";
constexpr std::string_view kEscrowMagic = "KRC1";
constexpr std::string_view kEscrowAad = "kmsfs/v1/recovery-escrow";
constexpr std::string_view kEscrowKeyInfo = "kmsfs/v1/recovery-escrow-key";
constexpr size_t kChecksumBytes = 2;
constexpr size_t kPayloadBytes = kRecoveryCodeBytes + kChecksumBytes;  // 34
constexpr size_t kCodeChars = (kPayloadBytes * 8 + 4) / 5;             // 55
constexpr size_t kGroup = 5;

std::array<uint8_t, kChecksumBytes> Checksum(std::span<const uint8_t> code) {
  const crypto::Sha256Digest d = crypto::Sha256(AsBytes(kChecksumLabel), code);
  return {d[0], d[1]};
}

// Crockford decoding of one character; -1 if not in the alphabet.
int DecodeChar(char c) {
  if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
  if (c == 'O') c = '0';
  if (c == 'I' || c == 'L') c = '1';
  const size_t i = kAlphabet.find(c);
  return i == std::string_view::npos ? -1 : static_cast<int>(i);
}

Result<crypto::SecretBytes> EscrowKey(const RecoveryCode& code) {
  return crypto::Hkdf(code.span(), {}, AsBytes(kEscrowKeyInfo), 32);
}

}  // namespace

RecoveryCode NewRecoveryCode() { return crypto::RandomKey<RecoveryCodeTag>(); }

crypto::SecretBytes FormatRecoveryCode(const RecoveryCode& code) {
  crypto::SecretBytes payload(kPayloadBytes);
  std::memcpy(payload.data(), code.span().data(), kRecoveryCodeBytes);
  const auto sum = Checksum(code.span());
  std::memcpy(payload.data() + kRecoveryCodeBytes, sum.data(), kChecksumBytes);
  crypto::SecretBytes out(kCodeChars + kCodeChars / kGroup - 1);
  size_t pos = 0;
  uint32_t acc = 0;
  int bits = 0;
  size_t chars = 0;
  auto emit = [&](uint32_t v) {
    if (chars > 0 && chars % kGroup == 0) out.data()[pos++] = '-';
    out.data()[pos++] = static_cast<uint8_t>(kAlphabet[v & 31]);
    ++chars;
  };
  for (size_t i = 0; i < kPayloadBytes; ++i) {
    acc = (acc << 8) | payload.data()[i];
    bits += 8;
    while (bits >= 5) {
      emit(acc >> (bits - 5));
      bits -= 5;
    }
    acc &= (1u << bits) - 1;  // keep only the unconsumed bits (no secret left in high bits)
  }
  if (bits > 0) emit(acc << (5 - bits));
  acc = 0;
  return out;
}

Result<RecoveryCode> ParseRecoveryCode(std::string_view text) {
  crypto::SecretBytes payload(kPayloadBytes + 1);
  size_t chars = 0;
  size_t out = 0;
  uint32_t acc = 0;
  int bits = 0;
  for (char c : text) {
    if (c == '-' || c == ' ' || c == '\t' || c == '\n' || c == '\r') continue;
    const int v = DecodeChar(c);
    if (v < 0) {
      return Error(Code::kInvalidArgument,
                   "the recovery code has a character that is not in its alphabet (0-9 and "
                   "A-Z without I, L, O, U); check what you typed");
    }
    if (++chars > kCodeChars) break;
    acc = (acc << 5) | static_cast<uint32_t>(v);
    bits += 5;
    if (bits >= 8) {
      payload.data()[out++] = static_cast<uint8_t>(acc >> (bits - 8));
      bits -= 8;
      acc &= (1u << bits) - 1;
    }
  }
  if (chars != kCodeChars) {
    return Error(Code::kInvalidArgument, "a recovery code has " + std::to_string(kCodeChars) +
                                             " characters (11 groups of 5); this one has " +
                                             (chars > kCodeChars ? "more" : std::to_string(chars)));
  }
  // 55 characters carry 275 bits: 272 of payload and 3 zero bits.
  if (out != kPayloadBytes || acc != 0) {
    return Error(Code::kInvalidArgument,
                 "the recovery code's last group is not valid; a character is mistyped");
  }
  const std::span<const uint8_t> code_bytes(payload.data(), kRecoveryCodeBytes);
  const auto sum = Checksum(code_bytes);
  if (!crypto::ConstantTimeEqual(
          sum, std::span<const uint8_t>(payload.data() + kRecoveryCodeBytes, kChecksumBytes))) {
    return Error(Code::kInvalidArgument,
                 "the recovery code's checksum does not match: a character is mistyped");
  }
  return RecoveryCode::FromBytes(crypto::SecretBytes::CopyFrom(code_bytes));
}

Result<Bytes> SealRootKeyEscrow(const RecoveryCode& code, const crypto::RootKey& root) {
  KMSFS_ASSIGN_OR_RETURN(crypto::SecretBytes key, EscrowKey(code));
  KMSFS_ASSIGN_OR_RETURN(crypto::Aes256Gcm gcm, crypto::Aes256Gcm::Create(key.span()));
  Bytes out(kRecoveryEscrowSize);
  std::memcpy(out.data(), kEscrowMagic.data(), kEscrowMagic.size());
  const std::span<uint8_t> all(out);
  const std::span<uint8_t> nonce = all.subspan(4, crypto::kGcmNonceLen);
  crypto::RandomBytes(nonce);
  KMSFS_RETURN_IF_ERROR(gcm.Seal(nonce, AsBytes(kEscrowAad), root.span(),
                                 all.subspan(4 + crypto::kGcmNonceLen, 32),
                                 all.last(crypto::kGcmTagLen)));
  return out;
}

Result<crypto::RootKey> OpenRootKeyEscrow(const RecoveryCode& code, ByteSpan escrow) {
  if (escrow.size() != kRecoveryEscrowSize ||
      std::memcmp(escrow.data(), kEscrowMagic.data(), kEscrowMagic.size()) != 0) {
    return Error(Code::kCorrupt, "the recovery escrow in the state is malformed");
  }
  KMSFS_ASSIGN_OR_RETURN(crypto::SecretBytes key, EscrowKey(code));
  KMSFS_ASSIGN_OR_RETURN(crypto::Aes256Gcm gcm, crypto::Aes256Gcm::Create(key.span()));
  crypto::RootKey root;
  Status s = gcm.Open(escrow.subspan(4, crypto::kGcmNonceLen), AsBytes(kEscrowAad),
                      escrow.subspan(4 + crypto::kGcmNonceLen, 32), escrow.last(crypto::kGcmTagLen),
                      root.mutable_span());
  if (!s.ok()) {
    return Error(Code::kPermissionDenied,
                 "this recovery code does not open the state's recovery escrow (another code, "
                 "or a code made for another state or made before the last change of the "
                 "root key)");
  }
  return root;
}

}  // namespace kmsfs::keyd
