// The ops' string options, parsed into the enums the kernels use.
//
// The accepted strings must be exactly those of sgpo_engine/options.py:
// tests/test_options.py reads each list back from the error message of a
// bad value, so keep the "expected one of (...)" format.
#pragma once
#include <c10/util/Exception.h>

#include <string>
#include <string_view>
#include <utility>

#include "common/group_stats.h"

namespace sgpo {

// cispo aggregates like dapo and sapo like grpo (as TRL does); both also
// change the per-token surrogate (common/policy_loss.h).
enum class LossType : int { Grpo = 0, Bnpo = 1, Dapo = 2, DrGrpo = 3, Cispo = 4, Sapo = 5 };
enum class ISLevel : int { Token = 0, Sequence = 1 };

template <typename E, size_t N>
E parse_option(const char* name, std::string_view value, const std::pair<std::string_view, E> (&table)[N]) {
  for (const auto& [text, e] : table)
    if (value == text) return e;
  std::string accepted;
  for (const auto& [text, e] : table) accepted += (accepted.empty() ? "'" : ", '") + std::string(text) + "'";
  TORCH_CHECK_VALUE(false, name, ": expected one of (", accepted, "), got '", value, "'");
}

inline Scope parse_scope(std::string_view v) {
  static constexpr std::pair<std::string_view, Scope> t[] = {
      {"all_negative", Scope::AllNegative}, {"all_incorrect", Scope::AllIncorrect}, {"off", Scope::Off}};
  return parse_option("scope", v, t);
}
inline Credit parse_credit(std::string_view v) {
  static constexpr std::pair<std::string_view, Credit> t[] = {{"sigmoid", Credit::Sigmoid}, {"linear", Credit::Linear}};
  return parse_option("credit", v, t);
}
inline Scale parse_scale(std::string_view v) {
  static constexpr std::pair<std::string_view, Scale> t[] = {
      {"group", Scale::Group}, {"batch", Scale::Batch}, {"none", Scale::None}};
  return parse_option("scale", v, t);
}
inline LossType parse_loss_type(std::string_view v) {
  static constexpr std::pair<std::string_view, LossType> t[] = {
      {"grpo", LossType::Grpo}, {"bnpo", LossType::Bnpo}, {"dapo", LossType::Dapo},
      {"dr_grpo", LossType::DrGrpo}, {"cispo", LossType::Cispo},   {"sapo", LossType::Sapo}};
  return parse_option("loss_type", v, t);
}
inline ISLevel parse_is_level(std::string_view v) {
  static constexpr std::pair<std::string_view, ISLevel> t[] = {{"token", ISLevel::Token},
                                                               {"sequence", ISLevel::Sequence}};
  return parse_option("importance_sampling_level", v, t);
}

}  // namespace sgpo
