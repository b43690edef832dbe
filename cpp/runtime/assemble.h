/* Forces and virials from a model's dE/d(edge vector) (export/README.md, "Assembling
 * forces, stress and virials"): the one C++ assembly, used by the LAMMPS pair style and,
 * through facet._pjrt, by the ASE calculator. Tested against facet.model.forces_and_virial. */
#pragma once

#include <cstdint>

namespace facet {

// For every edge e (vector r_e = x_sender - x_receiver + shift, gradient g_e = dE/dr_e):
//   force[sender] -= g_e, force[receiver] += g_e                  (added to force_rows)
//   virial += -r_e (x) g_e, symmetrised, Voigt order xx yy zz xy xz yz (if virial)
//   half of edge e's virial to each of its two atoms              (if atom_virial_rows)
// Rows are indexed by the senders/receivers; nothing is zeroed first.
void add_forces_and_virial(const double *edge_vectors, const double *edge_gradients, const int32_t *senders,
                           const int32_t *receivers, int64_t n_edges, double *const *force_rows, double *virial,
                           double *const *atom_virial_rows);

// A committee's force deviation at one atom, sqrt(mean_m |F_m - mean_m F_m|^2), from its
// members' forces on that atom: member_forces[3 * m + k] for member m and component k.
double member_force_deviation(const double *member_forces, int members);

}  // namespace facet
