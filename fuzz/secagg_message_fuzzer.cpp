// libFuzzer target for the secure-aggregation wire decoders: the first byte picks the message type,
// the rest is the message. Every decode must either throw core::Error or return a message that
// encodes back to exactly the same bytes (the format is canonical, so anything else means the
// decoder accepted something it misread). A decoded AdvertiseKeys also goes to a fresh server,
// which must accept it or refuse it with core::Error.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <type_traits>
#include <vector>

#include "aegis/core/error.h"
#include "aegis/federated/secure_aggregation.h"

namespace {

using namespace aegis::federated;

template <typename Message>
void round_trip(std::span<const std::uint8_t> bytes) {
  Message message;
  try {
    message = Message::decode(bytes);
  } catch (const aegis::core::Error&) {
    return;
  }
  const std::vector<std::uint8_t> again = message.encode();
  if (again.size() != bytes.size() || !std::equal(again.begin(), again.end(), bytes.begin())) std::abort();
  if constexpr (std::is_same_v<Message, AdvertiseKeys>) {
    SecAggServer server(SecAggParams{message.round_id, 2, 4});
    try {
      server.receive_keys(message);
      server.receive_keys(message);  // a replay must be refused
      std::abort();
    } catch (const aegis::core::Error&) {
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::span<const std::uint8_t> bytes(data + 1, size - 1);
  try {
    peek_message_type(bytes);
  } catch (const aegis::core::Error&) {
  }
  switch (data[0] % 8) {
    case 0: round_trip<SecAggParams>(bytes); break;
    case 1: round_trip<AdvertiseKeys>(bytes); break;
    case 2: round_trip<KeyDirectory>(bytes); break;
    case 3: round_trip<ShareUpload>(bytes); break;
    case 4: round_trip<ShareDelivery>(bytes); break;
    case 5: round_trip<MaskedInput>(bytes); break;
    case 6: round_trip<UnmaskRequest>(bytes); break;
    case 7: round_trip<UnmaskResponse>(bytes); break;
  }
  return 0;
}
