/* The engine's inner loops in C: a month's rows summed per group, weighted by their places'
 * shares (insights/summed.py), as read from PostgreSQL or where they lie in the node's mapped
 * copy (insights/local_months.py). numpy would gather the rows, widen them to floats and
 * multiply matrices: four passes over memory, a matrix and a dozen calls a month, each of which
 * costs a new area's first report, its caches cold, several times what it costs hot. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <math.h>
#include <string.h>

typedef struct {
    const char *name;
    char kind; /* 'i' signed, 'u' unsigned, 'f' float */
    Py_ssize_t itemsize;
    int ndim;
    int writable;
} Spec;

/* The format's kind: numpy exports int32 as "i", int64 as "l" or "q", uint8 as "B", float64 as "d". */
static char format_kind(const char *format) {
    if (format == NULL) return 'u';
    if (*format == '<' || *format == '=' || *format == '@') format++;
    switch (*format) {
    case 'b': case 'h': case 'i': case 'l': case 'q': return 'i';
    case 'B': case 'H': case 'I': case 'L': case 'Q': return 'u';
    case 'd': return 'f';
    default: return '?';
    }
}

static int get(PyObject *object, Py_buffer *view, const Spec *spec) {
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (spec->writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(object, view, flags) < 0) {
        PyErr_Format(PyExc_ValueError, "%s: a C-contiguous%s array is needed", spec->name,
                     spec->writable ? ", writable" : "");
        return -1;
    }
    if (view->ndim != spec->ndim || format_kind(view->format) != spec->kind ||
        (spec->itemsize && view->itemsize != spec->itemsize)) {
        PyErr_Format(PyExc_ValueError, "%s: %d dimensions of kind '%c' are needed", spec->name, spec->ndim,
                     spec->kind);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

/* One row of values and counts added into its group's sums, times its share. */
#define ADD_ROW(v, c, s, group)                                                              \
    do {                                                                                     \
        double *vo = value_out + (group) * width, *wo = weight_out + (group) * width,        \
               *co = count_out + (group) * width;                                            \
        for (Py_ssize_t h = 0; h < width; h++) {                                             \
            const double counted = (double)(c)[h];                                           \
            vo[h] += (s) * (double)(v)[h];                                                   \
            wo[h] += (s) * counted;                                                          \
            co[h] += counted;                                                                \
        }                                                                                    \
    } while (0)

#define ACCUMULATE(TYPE)                                                                     \
    for (Py_ssize_t i = 0; i < n; i++) {                                                     \
        const TYPE *v = (const TYPE *)values.buf + rows_at[i] * width;                       \
        const uint8_t *c = (const uint8_t *)counts.buf + rows_at[i] * width;                 \
        ADD_ROW(v, c, shares[i], groups_at[i]);                                              \
    }

PyDoc_STRVAR(weighted_sums_doc,
"weighted_sums(values, counts, rows, groups, shares, value, weight, count)\n--\n\n"
"Add each of the rows (positions in values and counts: int32 or int64 and uint8 arrays of\n"
"(rows, width)) into its group's row of value, weight and count (float64 (groups, width)):\n"
"its values times its share, its counts times its share, and its counts.");

static PyObject *weighted_sums(PyObject *self, PyObject *args) {
    PyObject *objects[8];
    if (!PyArg_UnpackTuple(args, "weighted_sums", 8, 8, &objects[0], &objects[1], &objects[2], &objects[3],
                           &objects[4], &objects[5], &objects[6], &objects[7]))
        return NULL;
    const Spec specs[8] = {
        {"values", 'i', 0, 2, 0},  {"counts", 'u', 1, 2, 0}, {"rows", 'i', 8, 1, 0}, {"groups", 'i', 8, 1, 0},
        {"shares", 'f', 8, 1, 0},  {"value", 'f', 8, 2, 1},  {"weight", 'f', 8, 2, 1}, {"count", 'f', 8, 2, 1},
    };
    Py_buffer views[8];
    int got = 0;
    PyObject *result = NULL;
    for (; got < 8; got++)
        if (get(objects[got], &views[got], &specs[got]) < 0) goto done;
    Py_buffer values = views[0], counts = views[1];
    const Py_ssize_t rows = values.shape[0], width = values.shape[1], n = views[2].shape[0];
    const Py_ssize_t groups = views[5].shape[0];
    if ((values.itemsize != 4 && values.itemsize != 8) || counts.shape[0] != rows || counts.shape[1] != width ||
        views[3].shape[0] != n || views[4].shape[0] != n) {
        PyErr_SetString(PyExc_ValueError, "weighted_sums: values, counts, rows, groups and shares do not match");
        goto done;
    }
    for (int out = 5; out < 8; out++) {
        if (views[out].shape[0] != groups || views[out].shape[1] != width) {
            PyErr_SetString(PyExc_ValueError, "weighted_sums: value, weight and count must be (groups, width)");
            goto done;
        }
    }
    const int64_t *rows_at = views[2].buf, *groups_at = views[3].buf;
    const double *shares = views[4].buf;
    double *value_out = views[5].buf, *weight_out = views[6].buf, *count_out = views[7].buf;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (rows_at[i] < 0 || rows_at[i] >= rows || groups_at[i] < 0 || groups_at[i] >= groups) {
            PyErr_SetString(PyExc_IndexError, "weighted_sums: a row or a group out of range");
            goto done;
        }
    }
    if (values.itemsize == 4) {
        ACCUMULATE(int32_t)
    } else {
        ACCUMULATE(int64_t)
    }
    result = Py_NewRef(Py_None);
done:
    for (int i = 0; i < got; i++) PyBuffer_Release(&views[i]);
    return result;
}

/* The position of key among the n ascending keys, or -1. */
static Py_ssize_t find(const int64_t *keys, Py_ssize_t n, int64_t key) {
    Py_ssize_t low = 0, high = n;
    while (low < high) {
        Py_ssize_t middle = low + (high - low) / 2;
        if (keys[middle] < key) low = middle + 1;
        else high = middle;
    }
    return low < n && keys[low] == key ? low : -1;
}

#define ACCUMULATE_COPY(TYPE)                                                                     \
    for (Py_ssize_t i = 0; i < places; i++) {                                                     \
        const Py_ssize_t at = find(copy_place, copy_places, place_ids[i]);                        \
        if (at < 0) continue;                                                                     \
        const double s = shares[i];                                                               \
        for (int64_t row = copy_bounds[at]; row < copy_bounds[at + 1]; row++) {                  \
            const Py_ssize_t key_at = find(keys, key_count, copy_segment[row]);                   \
            if (key_at < 0) continue;                                                             \
            const TYPE *v = (const TYPE *)values.buf + row * width;                               \
            const uint8_t *c = (const uint8_t *)counts.buf + row * width;                         \
            if (with_places && copy_segment[row] == 0) {                                          \
                memcpy((TYPE *)place_value.buf + i * width, v, width * sizeof(TYPE));             \
                memcpy((uint8_t *)place_count.buf + i * width, c, width);                         \
            }                                                                                     \
            const int64_t group = i * stride + key_groups[key_at];                                \
            found_out[group] = 1;                                                                 \
            ADD_ROW(v, c, s, group);                                                              \
        }                                                                                         \
    }

PyDoc_STRVAR(copied_sums_doc,
"copied_sums(copy_place, copy_bounds, copy_segment, values, counts, place_ids, shares, keys,\n"
"            key_groups, stride, value, weight, count, found, place_value, place_count)\n--\n\n"
"A month of the node's copy (insights/local_months.py: its places ascending, each one's rows\n"
"bounds[i]:bounds[i + 1], each row's segment key, values and counts) summed for an area's\n"
"places (place_ids, with their shares), read where the rows lie. A row whose segment key is\n"
"among keys (ascending) is added into group i * stride + key_groups[its key] (i: its place's\n"
"position) of value, weight and count (float64 (groups, width)), and marks it in found (uint8);\n"
"other rows are not read. place_value and place_count ((places, width), the values' and the\n"
"counts' types, or None): each place's row of segment key 0 there, if summed.");

static PyObject *copied_sums(PyObject *self, PyObject *args) {
    PyObject *objects[16];
    if (!PyArg_UnpackTuple(args, "copied_sums", 16, 16, &objects[0], &objects[1], &objects[2], &objects[3],
                           &objects[4], &objects[5], &objects[6], &objects[7], &objects[8], &objects[9],
                           &objects[10], &objects[11], &objects[12], &objects[13], &objects[14], &objects[15]))
        return NULL;
    const Py_ssize_t stride = PyNumber_AsSsize_t(objects[9], PyExc_OverflowError);
    if (stride == -1 && PyErr_Occurred()) return NULL;
    const int with_places = objects[14] != Py_None;
    if (with_places != (objects[15] != Py_None)) {
        PyErr_SetString(PyExc_ValueError, "copied_sums: place_value and place_count go together");
        return NULL;
    }
    /* objects[9] (stride) is not a buffer: its slot is skipped. */
    const Spec specs[16] = {
        {"copy_place", 'i', 8, 1, 0}, {"copy_bounds", 'i', 8, 1, 0}, {"copy_segment", 'i', 8, 1, 0},
        {"values", 'i', 0, 2, 0},     {"counts", 'u', 1, 2, 0},      {"place_ids", 'i', 8, 1, 0},
        {"shares", 'f', 8, 1, 0},     {"keys", 'i', 8, 1, 0},        {"key_groups", 'i', 8, 1, 0},
        {NULL, 0, 0, 0, 0},           {"value", 'f', 8, 2, 1},       {"weight", 'f', 8, 2, 1},
        {"count", 'f', 8, 2, 1},      {"found", 'u', 1, 1, 1},       {"place_value", 'i', 0, 2, 1},
        {"place_count", 'u', 1, 2, 1},
    };
    Py_buffer views[16];
    int held[16] = {0};
    PyObject *result = NULL;
    for (int i = 0; i < 16; i++) {
        if (specs[i].name == NULL || (i >= 14 && !with_places)) continue;
        if (get(objects[i], &views[i], &specs[i]) < 0) goto done;
        held[i] = 1;
    }
    Py_buffer values = views[3], counts = views[4];
    const Py_ssize_t copy_places = views[0].shape[0], rows = values.shape[0], width = values.shape[1];
    const Py_ssize_t places = views[5].shape[0], key_count = views[7].shape[0], groups = views[10].shape[0];
    Py_buffer place_value = views[14], place_count = views[15];
    if ((values.itemsize != 4 && values.itemsize != 8) || counts.shape[0] != rows || counts.shape[1] != width ||
        views[1].shape[0] != copy_places + 1 || views[2].shape[0] != rows || views[6].shape[0] != places ||
        views[8].shape[0] != key_count || views[13].shape[0] != groups || stride < 0) {
        PyErr_SetString(PyExc_ValueError, "copied_sums: the copy's, the places' or the keys' arrays do not match");
        goto done;
    }
    for (int out = 10; out < 13; out++) {
        if (views[out].shape[0] != groups || views[out].shape[1] != width) {
            PyErr_SetString(PyExc_ValueError, "copied_sums: value, weight and count must be (groups, width)");
            goto done;
        }
    }
    if (with_places && (place_value.shape[0] != places || place_value.shape[1] != width ||
                        place_value.itemsize != values.itemsize || place_count.shape[0] != places ||
                        place_count.shape[1] != width)) {
        PyErr_SetString(PyExc_ValueError, "copied_sums: place_value and place_count must be (places, width)");
        goto done;
    }
    const int64_t *copy_place = views[0].buf, *copy_bounds = views[1].buf, *copy_segment = views[2].buf;
    const int64_t *place_ids = views[5].buf, *keys = views[7].buf, *key_groups = views[8].buf;
    const double *shares = views[6].buf;
    double *value_out = views[10].buf, *weight_out = views[11].buf, *count_out = views[12].buf;
    uint8_t *found_out = views[13].buf;
    /* Every row and group the sums could reach is checked first: nothing is written out of bounds. */
    for (Py_ssize_t i = 0; i < copy_places; i++) {
        if (copy_bounds[i] < 0 || copy_bounds[i] > copy_bounds[i + 1] || copy_bounds[i + 1] > rows ||
            (i && copy_place[i - 1] >= copy_place[i])) {
            PyErr_SetString(PyExc_ValueError, "copied_sums: the copy's places or bounds are out of order");
            goto done;
        }
    }
    for (Py_ssize_t k = 0; k < key_count; k++) {
        /* The last place's group of the key, (places - 1) * stride + key_groups[k], below groups:
         * compared without the product, which could overflow. */
        if ((k && keys[k - 1] >= keys[k]) || key_groups[k] < 0 || key_groups[k] >= groups ||
            (places > 1 && stride > 0 && places - 1 > (groups - 1 - key_groups[k]) / stride)) {
            PyErr_SetString(PyExc_IndexError, "copied_sums: keys out of order, or a group out of range");
            goto done;
        }
    }
    if (values.itemsize == 4) {
        ACCUMULATE_COPY(int32_t)
    } else {
        ACCUMULATE_COPY(int64_t)
    }
    result = Py_NewRef(Py_None);
done:
    for (int i = 0; i < 16; i++)
        if (held[i]) PyBuffer_Release(&views[i]);
    return result;
}

typedef struct {
    const uint8_t *at, *end;
    double *east, *north;
    int64_t *ring_ends;
    uint8_t *exterior;
    Py_ssize_t points, rings;
} Walk;

static int read_u32(Walk *walk, int little, uint32_t *value) {
    if (walk->end - walk->at < 4) return -1;
    const uint8_t *b = walk->at;
    *value = little ? (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24
                    : (uint32_t)b[3] | (uint32_t)b[2] << 8 | (uint32_t)b[1] << 16 | (uint32_t)b[0] << 24;
    walk->at += 4;
    return 0;
}

static double read_f64(const uint8_t *b, int little) {
    uint8_t ordered[8];
    for (int i = 0; i < 8; i++) ordered[i] = little ? b[i] : b[7 - i];
    double value;
    memcpy(&value, ordered, 8); /* x86-64 and arm64 are little-endian */
    return value;
}

/* A WKB polygon (or multipolygon: depth 0) walked: its rings' points counted, or copied when
 * the walk has arrays. ISO and extended (PostGIS, GEOS) flags for heights and measures alike. */
static int walk_geometry(Walk *walk, int depth) {
    if (walk->at >= walk->end) return -1;
    const int little = *walk->at++ == 1;
    uint32_t type;
    if (read_u32(walk, little, &type) < 0) return -1;
    int dimensions = 2 + ((type & 0x80000000u) != 0) + ((type & 0x40000000u) != 0);
    if (type & 0x20000000u) { /* an SRID */
        if (walk->end - walk->at < 4) return -1;
        walk->at += 4;
    }
    uint32_t base = type & 0x0FFFFFFFu;
    if (base >= 1000 && base < 4000) {
        dimensions = base / 1000 == 3 ? 4 : 3;
        base %= 1000;
    }
    uint32_t count;
    if (read_u32(walk, little, &count) < 0) return -1;
    if (base == 6 && depth == 0) {
        for (uint32_t part = 0; part < count; part++) {
            const int walked = walk_geometry(walk, 1);
            if (walked < 0) return walked;
        }
        return 0;
    }
    if (base != 3) return -2;
    for (uint32_t ring = 0; ring < count; ring++) {
        uint32_t points;
        if (read_u32(walk, little, &points) < 0) return -1;
        const Py_ssize_t size = (Py_ssize_t)dimensions * 8;
        if ((walk->end - walk->at) / size < (Py_ssize_t)points) return -1;
        if (walk->east != NULL) {
            for (uint32_t i = 0; i < points; i++) {
                walk->east[walk->points + i] = read_f64(walk->at + i * size, little);
                walk->north[walk->points + i] = read_f64(walk->at + i * size + 8, little);
            }
            walk->ring_ends[walk->rings] = walk->points + points;
            walk->exterior[walk->rings] = ring == 0;
        }
        walk->at += points * size;
        walk->points += points;
        walk->rings++;
    }
    return 0;
}

PyDoc_STRVAR(area_rings_doc,
"area_rings(wkb)\n--\n\n"
"A polygon's or multipolygon's rings from its WKB: bytearrays of every point's east and north\n"
"(float64, heights and measures dropped), bytes of where each ring ends (int64) and whether it\n"
"is an exterior (uint8).");

static PyObject *area_rings(PyObject *self, PyObject *arg) {
    Py_buffer wkb;
    if (PyObject_GetBuffer(arg, &wkb, PyBUF_SIMPLE) < 0) return NULL;
    Walk walk = {wkb.buf, (const uint8_t *)wkb.buf + wkb.len, NULL, NULL, NULL, NULL, 0, 0};
    PyObject *east = NULL, *north = NULL, *ends = NULL, *exterior = NULL, *result = NULL;
    int walked = walk_geometry(&walk, 0);
    if (walked == 0 && walk.at != walk.end) walked = -1;
    if (walked < 0) {
        PyErr_SetString(PyExc_ValueError, walked == -2 ? "area_rings: not a polygon or a multipolygon"
                                                       : "area_rings: the WKB is cut short or too long");
        goto done;
    }
    east = PyByteArray_FromStringAndSize(NULL, walk.points * 8);
    north = PyByteArray_FromStringAndSize(NULL, walk.points * 8);
    ends = PyBytes_FromStringAndSize(NULL, walk.rings * 8);
    exterior = PyBytes_FromStringAndSize(NULL, walk.rings);
    if (!east || !north || !ends || !exterior) goto done;
    Walk fill = {wkb.buf, (const uint8_t *)wkb.buf + wkb.len, (double *)PyByteArray_AS_STRING(east),
                 (double *)PyByteArray_AS_STRING(north), (int64_t *)PyBytes_AS_STRING(ends),
                 (uint8_t *)PyBytes_AS_STRING(exterior), 0, 0};
    walk_geometry(&fill, 0);
    result = PyTuple_Pack(4, east, north, ends, exterior);
done:
    Py_XDECREF(east);
    Py_XDECREF(north);
    Py_XDECREF(ends);
    Py_XDECREF(exterior);
    PyBuffer_Release(&wkb);
    return result;
}

/* One straight piece of a ring's edge within row `row` of the span (metres from the span's
 * corner), split at the columns' lines: each part's area to its right within its cell, and a
 * whole cell's width of it for every cell further right (summed along the row afterwards). */
static void add_piece(double *area, uint8_t *edge, Py_ssize_t columns, Py_ssize_t row, double resolution,
                      double x_low, double x_high, double dy) {
    double left = x_low < x_high ? x_low : x_high, right = x_low < x_high ? x_high : x_low;
    Py_ssize_t first = (Py_ssize_t)floor(left / resolution), last = (Py_ssize_t)floor(right / resolution);
    if (first < 0) first = 0;
    if (last > columns - 1) last = columns - 1;
    if (first > last) first = last;
    double *row_area = area + row * (columns + 1);
    for (Py_ssize_t column = first; column <= last; column++) {
        edge[row * columns + column] = 1;
        const double start = column == first ? left : column * resolution;
        const double stop = column == last ? right : (column + 1) * resolution;
        const double part = right > left ? dy * (stop - start) / (right - left) : dy;
        const double within = (start + stop) / 2 - column * resolution; /* its mean distance into the cell */
        row_area[column] += part * (resolution - within);
        row_area[column + 1] += part * within;
    }
}

PyDoc_STRVAR(covered_doc,
"covered(east, north, ring_ends, exterior, resolution, first_row, first_column, shares)\n--\n\n"
"The share of each cell of a span of the grid inside an area, given as area_rings gives its\n"
"rings (east and north as float64 arrays, in the grid's CRS; each ring closed, either way round):\n"
"shares (float64 (rows, columns), zeros) the span's cells from first_row and first_column. A\n"
"cell no edge passes through is wholly inside (1) or outside (0), as ST_Within says; the others'\n"
"area inside is exact, summed edge by edge (Green's theorem). Every point must lie in the span.");

static PyObject *covered(PyObject *self, PyObject *args) {
    PyObject *objects[5];
    double resolution;
    long long first_row, first_column;
    if (!PyArg_ParseTuple(args, "OOOOdLLO", &objects[0], &objects[1], &objects[2], &objects[3], &resolution,
                          &first_row, &first_column, &objects[4]))
        return NULL;
    const Spec specs[5] = {
        {"east", 'f', 8, 1, 0}, {"north", 'f', 8, 1, 0}, {"ring_ends", 'i', 8, 1, 0}, {"exterior", 'u', 1, 1, 0},
        {"shares", 'f', 8, 2, 1},
    };
    Py_buffer views[5];
    int got = 0;
    PyObject *result = NULL;
    double *area = NULL;
    uint8_t *edge = NULL;
    for (; got < 5; got++)
        if (get(objects[got], &views[got], &specs[got]) < 0) goto done;
    const Py_ssize_t count = views[0].shape[0], rings = views[2].shape[0];
    const Py_ssize_t rows = views[4].shape[0], columns = views[4].shape[1];
    const double *east = views[0].buf, *north = views[1].buf;
    const int64_t *ring_ends = views[2].buf;
    const uint8_t *exterior = views[3].buf;
    double *out = views[4].buf;
    if (views[1].shape[0] != count || views[3].shape[0] != rings || !(isfinite(resolution) && resolution > 0) ||
        rows == 0 || columns == 0) {
        PyErr_SetString(PyExc_ValueError, "covered: east, north, ring ends and exteriors do not match, or no span");
        goto done;
    }
    for (Py_ssize_t ring = 0; ring < rings; ring++) {
        if (ring_ends[ring] < (ring ? ring_ends[ring - 1] : 0) || ring_ends[ring] > count) {
            PyErr_SetString(PyExc_ValueError, "covered: ring ends out of order or past the points");
            goto done;
        }
    }
    area = PyMem_Calloc(rows * (columns + 1), sizeof(double));
    edge = PyMem_Calloc(rows * columns, 1);
    if (area == NULL || edge == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    /* In metres from the span's corner: exact, the corner's coordinates being whole metres. */
    const double east0 = (double)first_column * resolution, north0 = (double)first_row * resolution;
    const double top = rows * resolution, right = columns * resolution;
    Py_ssize_t start = 0;
    for (Py_ssize_t ring = 0; ring < rings; start = ring_ends[ring], ring++) {
        /* Exteriors walked anticlockwise and holes clockwise, whichever way round they come. */
        double twice_area = 0.0;
        for (Py_ssize_t i = start; i + 1 < ring_ends[ring]; i++)
            twice_area += (east[i] - east0) * (north[i + 1] - north0) - (east[i + 1] - east0) * (north[i] - north0);
        const double turn = (twice_area > 0) == (exterior[ring] != 0) ? 1.0 : -1.0;
        for (Py_ssize_t i = start; i + 1 < ring_ends[ring]; i++) {
            double xa = east[i] - east0, ya = north[i] - north0, xb = east[i + 1] - east0, yb = north[i + 1] - north0;
            /* Written so that a NaN fails too. */
            if (!(ya >= 0 && yb >= 0 && ya <= top && yb <= top && xa >= 0 && xb >= 0 && xa <= right && xb <= right)) {
                PyErr_SetString(PyExc_ValueError, "covered: a point outside the span");
                goto done;
            }
            if (ya == yb) { /* no area, but the cells it runs through are cut */
                Py_ssize_t row = (Py_ssize_t)floor(ya / resolution);
                if (row < rows && ya > row * resolution) add_piece(area, edge, columns, row, resolution, xa, xb, 0.0);
                continue;
            }
            /* Walked upwards; a downward edge counts negatively. */
            double sign = turn;
            if (ya > yb) {
                double swap = xa; xa = xb; xb = swap;
                swap = ya; ya = yb; yb = swap;
                sign = -turn;
            }
            const double slope = (xb - xa) / (yb - ya);
            for (Py_ssize_t row = (Py_ssize_t)floor(ya / resolution); row < rows && row * resolution < yb; row++) {
                const double low = row * resolution > ya ? row * resolution : ya;
                const double high = (row + 1) * resolution < yb ? (row + 1) * resolution : yb;
                const double x_low = low == ya ? xa : xa + (low - ya) * slope;
                const double x_high = high == yb ? xb : xa + (high - ya) * slope;
                add_piece(area, edge, columns, row, resolution, x_low, x_high, sign * (high - low));
            }
        }
    }
    const double cell = resolution * resolution;
    for (Py_ssize_t row = 0; row < rows; row++) {
        double inside = 0.0; /* anticlockwise exteriors sum negative: the area to their left */
        for (Py_ssize_t column = 0; column < columns; column++) {
            inside -= area[row * (columns + 1) + column];
            double share = inside / cell;
            if (!edge[row * columns + column]) share = share > 0.5 ? 1.0 : 0.0;
            out[row * columns + column] = share < 0 ? 0.0 : (share > 1 ? 1.0 : share);
        }
    }
    result = Py_NewRef(Py_None);
done:
    PyMem_Free(area);
    PyMem_Free(edge);
    for (int i = 0; i < got; i++) PyBuffer_Release(&views[i]);
    return result;
}

static PyMethodDef methods[] = {
    {"weighted_sums", weighted_sums, METH_VARARGS, weighted_sums_doc},
    {"copied_sums", copied_sums, METH_VARARGS, copied_sums_doc},
    {"area_rings", area_rings, METH_O, area_rings_doc},
    {"covered", covered, METH_VARARGS, covered_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "footfall_kernels", "The footfall engine's inner loops in C.", 0, methods,
};

PyMODINIT_FUNC PyInit_footfall_kernels(void) { return PyModuleDef_Init(&module); }
