// Bytes as lowercase hexadecimal text and back: for opaque bytes (transfer endpoints, region keys) carried in
// text protocols and command lines.
#pragma once

#include <cstddef>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace recgpt {

std::string to_hex(std::span<const std::byte> bytes);
// kInvalidArgument for an odd length or a character that is not a hexadecimal digit.
Result<std::vector<std::byte>> from_hex(std::string_view text);

}  // namespace recgpt
