/* Facet-MD: map a LAMMPS full neighbour list onto a Facet graph.
 * See graph_builder.h. */

#include "graph_builder.h"

#include "lmptype.h"    // NEIGHMASK

#include <algorithm>

using LAMMPS_NS::tagint;

namespace FacetMD {

namespace {

void reset(Graph &graph, int64_t nnodes, int64_t edge_guess)
{
  graph.nnodes = nnodes;
  graph.nedges = 0;
  graph.species.assign(nnodes, 0);
  graph.energy_mask.assign(nnodes, 0.0);
  graph.edge_vectors.clear();
  graph.senders.clear();
  graph.receivers.clear();
  graph.edge_vectors.reserve(3 * edge_guess);
  graph.senders.reserve(edge_guess);
  graph.receivers.reserve(edge_guess);
}

inline int species_of(const std::vector<int> &type2species, int type)
{
  return type2species[type];
}

}    // namespace

bool GraphBuilder::map_owners(const AtomData &atoms)
{
  const int nall = atoms.nlocal + atoms.nghost;
  owner_.assign(nall, -1);
  if (atoms.tag == nullptr) return atoms.nghost == 0;

  tagint maxtag = 0;
  for (int i = 0; i < atoms.nlocal; ++i) maxtag = std::max(maxtag, atoms.tag[i]);
  const bool dense = maxtag <= 4 * static_cast<tagint>(atoms.nlocal) + 1024;
  if (dense) {
    tag_to_local_.assign(static_cast<size_t>(maxtag) + 1, -1);
    for (int i = 0; i < atoms.nlocal; ++i) tag_to_local_[atoms.tag[i]] = i;
  } else {
    sparse_tag_to_local_.clear();
    for (int i = 0; i < atoms.nlocal; ++i) sparse_tag_to_local_[atoms.tag[i]] = i;
  }
  for (int i = 0; i < atoms.nlocal; ++i) owner_[i] = i;
  for (int j = atoms.nlocal; j < nall; ++j) {
    const tagint t = atoms.tag[j];
    int owner = -1;
    if (dense) {
      if (t >= 0 && t <= maxtag) owner = tag_to_local_[t];
    } else {
      auto it = sparse_tag_to_local_.find(t);
      if (it != sparse_tag_to_local_.end()) owner = it->second;
    }
    owner_[j] = owner;
  }
  return true;
}

// The one edge loop of both layouts: every centre i of the neighbour list that this style
// handles (i < ncentres in list order), every neighbour j within the cutoff; node_of maps
// the neighbour to its graph node (the identity, or its owner when folding), -1 = unmappable.
template <typename NodeOf>
bool GraphBuilder::collect_edges(const AtomData &atoms, const NeighborData &neigh, int ncentres,
                                 const std::vector<int> &type2species, double cutoff, NodeOf node_of,
                                 Graph &graph)
{
  const double cutsq = cutoff * cutoff;
  double *const *x = atoms.x;
  for (int ii = 0; ii < ncentres; ++ii) {
    const int i = neigh.ilist[ii];
    if (species_of(type2species, atoms.type[i]) < 0) continue;
    const double xi = x[i][0], yi = x[i][1], zi = x[i][2];
    const int *jlist = neigh.firstneigh[i];
    const int jnum = neigh.numneigh[i];
    for (int jj = 0; jj < jnum; ++jj) {
      const int j = jlist[jj] & NEIGHMASK;
      if (species_of(type2species, atoms.type[j]) < 0) continue;
      const double dx = x[j][0] - xi, dy = x[j][1] - yi, dz = x[j][2] - zi;
      if (dx * dx + dy * dy + dz * dz >= cutsq) continue;
      const int sender = node_of(j);
      if (sender < 0) return false;
      graph.edge_vectors.push_back(dx);
      graph.edge_vectors.push_back(dy);
      graph.edge_vectors.push_back(dz);
      graph.senders.push_back(sender);
      graph.receivers.push_back(i);
    }
  }
  graph.nedges = static_cast<int64_t>(graph.senders.size());
  return true;
}

void GraphBuilder::reset_nodes(const AtomData &atoms, const NeighborData &neigh, int nnodes, int ncentres,
                               const std::vector<int> &type2species, Graph &graph)
{
  int64_t guess = 0;
  for (int ii = 0; ii < ncentres; ++ii) guess += neigh.numneigh[neigh.ilist[ii]];
  reset(graph, nnodes, guess / 2 + 16);
  for (int i = 0; i < nnodes; ++i) {
    const int s = species_of(type2species, atoms.type[i]);
    if (s >= 0) {
      graph.species[i] = s;
      if (i < atoms.nlocal) graph.energy_mask[i] = 1.0;    // ghost nodes' energies belong to others
    }
  }
}

bool GraphBuilder::build_folded(const AtomData &atoms, const NeighborData &neigh,
                                const std::vector<int> &type2species, double cutoff,
                                Graph &graph)
{
  if (!map_owners(atoms)) return false;
  reset_nodes(atoms, neigh, atoms.nlocal, neigh.inum, type2species, graph);
  // centres are owned atoms only; a ghost neighbour becomes its owned counterpart
  return collect_edges(atoms, neigh, neigh.inum, type2species, cutoff,
                       [this](int j) { return owner_[j]; }, graph);
}

void GraphBuilder::build_ghost(const AtomData &atoms, const NeighborData &neigh,
                               const std::vector<int> &type2species, double cutoff,
                               Graph &graph)
{
  const int ncentres = neigh.inum + neigh.gnum;
  reset_nodes(atoms, neigh, atoms.nlocal + atoms.nghost, ncentres, type2species, graph);
  collect_edges(atoms, neigh, ncentres, type2species, cutoff, [](int j) { return j; }, graph);
}

double GraphBuilder::memory_usage() const
{
  return static_cast<double>(owner_.capacity() * sizeof(int) +
                             tag_to_local_.capacity() * sizeof(int) +
                             sparse_tag_to_local_.size() * (sizeof(tagint) + 2 * sizeof(int)));
}

void GraphBuilder::build_exchange(const AtomData &atoms, const NeighborData &neigh,
                                  const std::vector<int> &type2species, double cutoff, Graph &graph)
{
  reset_nodes(atoms, neigh, atoms.nlocal + atoms.nghost, neigh.inum, type2species, graph);
  collect_edges(atoms, neigh, neigh.inum, type2species, cutoff, [](int j) { return j; }, graph);
}

}    // namespace FacetMD
