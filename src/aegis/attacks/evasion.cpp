#include "aegis/attacks/evasion.h"

#include <cmath>

#include "aegis/core/error.h"

namespace aegis::attacks {

std::string_view to_string(Norm norm) { return norm == Norm::Linf ? "linf" : "l2"; }

void EvasionAttack::validate(const models::ClassifierInfo& model, const Bounds& bounds) const {
  if (!(bounds.lo < bounds.hi) || !std::isfinite(bounds.lo) || !std::isfinite(bounds.hi))
    throw core::Error("the value range [" + std::to_string(bounds.lo) + ", " + std::to_string(bounds.hi) +
                          "] is empty or not finite",
                      "state the input range with --range LO,HI (for example 0,1 for images scaled by 1/255)");
  if (model.num_classes < 2)
    throw core::Error("the model reports " + std::to_string(model.num_classes) + " classes; an evasion attack needs at least 2");
  if (needs_gradients() && !model.has_gradients)
    throw core::Error("attack '" + name() + "' needs gradients, but the " + model.backend + " model '" + model.source +
                          "' is black-box",
                      "use --attack square (score-based) or --attack hopskipjump (decision-based), or give the "
                      "model as TorchScript for white-box attacks");
}

}  // namespace aegis::attacks
