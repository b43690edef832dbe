#include "assemble.h"

#include <cmath>

namespace facet {

void add_forces_and_virial(const double *edge_vectors, const double *edge_gradients, const int32_t *senders,
                           const int32_t *receivers, int64_t n_edges, double *const *force_rows, double *virial,
                           double *const *atom_virial_rows)
{
  double sum[6] = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0};
  const bool any_virial = virial || atom_virial_rows;
  for (int64_t e = 0; e < n_edges; e++) {
    const double *g = edge_gradients + 3 * e;
    double *fs = force_rows[senders[e]], *ft = force_rows[receivers[e]];
    for (int k = 0; k < 3; k++) {
      fs[k] -= g[k];
      ft[k] += g[k];
    }
    if (!any_virial) continue;
    const double *r = edge_vectors + 3 * e;
    const double v[6] = {-r[0] * g[0], -r[1] * g[1], -r[2] * g[2], -0.5 * (r[0] * g[1] + r[1] * g[0]),
                         -0.5 * (r[0] * g[2] + r[2] * g[0]), -0.5 * (r[1] * g[2] + r[2] * g[1])};
    for (int k = 0; k < 6; k++) sum[k] += v[k];
    if (atom_virial_rows) {
      double *vs = atom_virial_rows[senders[e]], *vt = atom_virial_rows[receivers[e]];
      for (int k = 0; k < 6; k++) {
        vs[k] += 0.5 * v[k];
        vt[k] += 0.5 * v[k];
      }
    }
  }
  if (virial)
    for (int k = 0; k < 6; k++) virial[k] += sum[k];
}

double member_force_deviation(const double *member_forces, int members)
{
  double mean[3] = {0.0, 0.0, 0.0};
  for (int m = 0; m < members; m++)
    for (int k = 0; k < 3; k++) mean[k] += member_forces[3 * m + k] / members;
  double sum = 0.0;
  for (int m = 0; m < members; m++)
    for (int k = 0; k < 3; k++) {
      const double d = member_forces[3 * m + k] - mean[k];
      sum += d * d;
    }
  return std::sqrt(sum / members);
}

}  // namespace facet
