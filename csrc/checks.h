// Argument checks of the ops, one line each, in flash-attention's style.
//
// The C++ boundary (entry.h) owns every check of the ops' arguments. A
// failed check throws c10::ValueError, which Python sees as ValueError, and
// its message starts with the argument's name:
//   CHECK_SHAPE(rts, n);   ->  "rts: expected shape [n] = [6], got [5]"
// The name is the checked expression's last identifier, so `*bias` and
// `a.q` report "bias" and "q": name variables after the public arguments.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <string_view>

namespace sgpo::detail {
// "rewards", "*bias", "a.q" -> "rewards", "bias", "q".
inline std::string_view arg_name(std::string_view expr) {
  const size_t cut = expr.find_last_of(".*>");
  return cut == std::string_view::npos ? expr : expr.substr(cut + 1);
}
}  // namespace sgpo::detail

// Any condition; the message follows "name: ".
#define CHECK_ARG(cond, x, ...) TORCH_CHECK_VALUE(cond, ::sgpo::detail::arg_name(#x), ": ", __VA_ARGS__)
#define CHECK_SHAPE(x, ...)                                                                            \
  CHECK_ARG((x).sizes() == at::IntArrayRef({__VA_ARGS__}), x, "expected shape [" #__VA_ARGS__ "] = ", \
            at::IntArrayRef({__VA_ARGS__}), ", got ", (x).sizes())
#define CHECK_DIM(x, d) CHECK_ARG((x).dim() == (d), x, "expected ", d, " dimension(s), got shape ", (x).sizes())
#define CHECK_DEVICE(x, like) \
  CHECK_ARG((x).device() == (like).device(), x, "expected device ", (like).device(), ", got ", (x).device())
#define CHECK_DTYPE(x, dtype) CHECK_ARG((x).scalar_type() == (dtype), x, "expected ", dtype, ", got ", (x).scalar_type())
#define CHECK_FLOAT(x) \
  CHECK_ARG(at::isFloatingType((x).scalar_type()), x, "expected a float tensor, got ", (x).scalar_type())
#define CHECK_CONTIGUOUS(x) CHECK_ARG((x).is_contiguous(), x, "expected a contiguous tensor")
// A finite double argument within the closed interval [lo, hi] (+-INFINITY for no bound).
#define CHECK_NUMBER(x, lo, hi) \
  CHECK_ARG(std::isfinite(x) && (x) >= (lo) && (x) <= (hi), x, "expected a finite number in [", lo, ", ", hi, "], got ", x)
// A finite double argument > 0.
#define CHECK_POSITIVE(x) CHECK_ARG(std::isfinite(x) && (x) > 0, x, "expected a finite number > 0, got ", x)
