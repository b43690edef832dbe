/* Facet-MD: registration of the `facet` pair style as a LAMMPS plugin.
 *
 * Load with `plugin load .../facetplugin.so`, or put its directory on
 * LAMMPS_PLUGIN_PATH (python -c "import facet; print(facet.lammps_plugin_path())"
 * prints where it is installed).
 */

#include "lammpsplugin.h"

#include "comm.h"
#include "error.h"
#include "lammps.h"
#include "pair_facet.h"
#include "utils.h"

#include <cstring>

#ifndef FACET_LAMMPS_VERSION
#error "FACET_LAMMPS_VERSION (the LAMMPS version string the plugin is built for) must be defined"
#endif
#ifndef FACET_VERSION
#define FACET_VERSION "unknown"
#endif

using namespace LAMMPS_NS;

static void *facet_pair_creator(void *lmp)
{
  return static_cast<Pair *>(new PairFacet(static_cast<LAMMPS *>(lmp)));
}

extern "C" __attribute__((visibility("default"))) void lammpsplugin_init(void *lmp_ptr,
                                                                         void *handle,
                                                                         void *regfunc)
{
  auto *lmp = static_cast<LAMMPS *>(lmp_ptr);

  // A plugin built against the headers of another LAMMPS version sees a
  // different class layout (the Pair vtable shifts) and would crash or
  // compute garbage: refuse to register rather than fail silently.
  if (strcmp(lmp->version, FACET_LAMMPS_VERSION) != 0) {
    if (lmp->comm->me == 0)
      utils::logmesg(lmp,
                     "WARNING: Facet pair style NOT loaded: facetplugin.so was built for LAMMPS "
                     "{} but this is LAMMPS {}. Rebuild facet-md against this LAMMPS "
                     "(see cpp/README.md).\n",
                     FACET_LAMMPS_VERSION, lmp->version);
    return;
  }

  lammpsplugin_t plugin;
  plugin.version = FACET_LAMMPS_VERSION;
  plugin.style = "pair";
  plugin.name = "facet";
  plugin.info = "Facet machine-learning interatomic potential (JAX model), facet-md " FACET_VERSION;
  plugin.author = "Facet-MD developers";
  plugin.creator.v1 = &facet_pair_creator;
  plugin.handle = handle;
  (*(lammpsplugin_regfunc) regfunc)(&plugin, lmp);
}
