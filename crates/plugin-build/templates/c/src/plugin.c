// A snapport backend in C: raw disk images as files.
//
// - Every `NAME.raw` file directly in the pool's granted folder 0 is the disk vd/NAME;
//   `NAME.image.raw` is the read-only image vi/NAME. New volumes are sparse files made
//   there with create-file-in (invisible until commit publishes them); delete-volume
//   removes the file.
// - Every device the pool grants (`devices = [...]`) is a disk too, read and written in
//   place, never created or deleted (the operator owns it).
// - Raw bytes are where they are: a volume's map is one data extent, and the host moves
//   the data itself with its own file descriptors.
//
// Build: `snapport plugin build`; check: `snapport plugin test NAME.wasm`.
#include "snapport.h"

#define E(kind) SNAPPORT_BACKEND_TYPES_BACKEND_ERROR_##kind
#define DISK SNAPPORT_BACKEND_TYPES_VOLUME_KIND_DISK
#define IMAGE SNAPPORT_BACKEND_TYPES_VOLUME_KIND_IMAGE

static const char SUFFIX[] = ".raw";
static const char IMAGE_MARK[] = ".image";

// The folder new volumes go in and files are listed from.
static const uint32_t FOLDER = 0;

// One volume of the pool, as found by `find_volumes`.
typedef struct {
    char *name;   // the volume's name (vd/NAME)
    char *target; // file path inside FOLDER, or the device's grant name
    uint64_t size;
    uint8_t kind;
    bool file;    // a file in FOLDER (deletable), not a granted device
} entry_t;

typedef struct {
    entry_t *items;
    size_t len, cap;
} entries_t;

// What an open or created volume holds.
struct exports_snapport_backend_backend_volume_t {
    uint32_t device;
    char *name;
    uint64_t size;
    uint8_t kind;
    bool created; // made by create-volume: commit publishes it
};

static void push(entries_t *list, entry_t e) {
    if (list->len == list->cap) {
        list->cap = list->cap ? list->cap * 2 : 8;
        list->items = realloc(list->items, list->cap * sizeof(entry_t));
        if (!list->items) sp_panic("out of memory listing volumes");
    }
    list->items[list->len++] = e;
}

static void free_entries(entries_t *list) {
    for (size_t i = 0; i < list->len; i++) {
        free(list->items[i].name);
        free(list->items[i].target);
    }
    free(list->items);
}

static bool has_folder(void) {
    snapport_backend_host_list_granted_folder_t folders;
    snapport_backend_host_granted_folders(&folders);
    bool found = folders.len > FOLDER;
    snapport_backend_host_list_granted_folder_free(&folders);
    return found;
}

// Every volume: the granted devices, then the raw files of FOLDER.
static bool find_volumes(entries_t *out, sp_error *err) {
    *out = (entries_t){0};
    snapport_backend_host_list_file_entry_t devices;
    snapport_backend_host_granted_devices(&devices);
    for (size_t i = 0; i < devices.len; i++) {
        char *name = sp_cstr(&devices.ptr[i].name);
        push(out, (entry_t){strdup(name), name, devices.ptr[i].size, DISK, false});
    }
    snapport_backend_host_list_file_entry_free(&devices);
    // A pool without folders has only devices; that is not an error.
    if (!has_folder()) return true;

    snapport_backend_host_list_folder_entry_t files;
    sp_string root = sp_str("");
    if (!snapport_backend_host_list_folder(FOLDER, &root, &files, err)) {
        free_entries(out);
        return false;
    }
    for (size_t i = 0; i < files.len; i++) {
        if (files.ptr[i].kind != SNAPPORT_BACKEND_TYPES_ENTRY_KIND_FILE) continue;
        char *path = sp_cstr(&files.ptr[i].name);
        if (!sp_ends_with(path, SUFFIX) || strlen(path) == strlen(SUFFIX)) {
            free(path);
            continue;
        }
        char *name = strndup(path, strlen(path) - strlen(SUFFIX));
        uint8_t kind = DISK;
        if (sp_ends_with(name, IMAGE_MARK) && strlen(name) > strlen(IMAGE_MARK)) {
            name[strlen(name) - strlen(IMAGE_MARK)] = 0;
            kind = IMAGE;
        }
        push(out, (entry_t){name, path, files.ptr[i].size, kind, true});
    }
    snapport_backend_host_list_folder_entry_free(&files);
    return true;
}

// The volume called `name` (as a C string), or not-found. On success `*found` points into
// `list`, which the caller frees.
static bool find(const char *name, entries_t *list, entry_t **found, sp_error *err) {
    if (!find_volumes(list, err)) return false;
    for (size_t i = 0; i < list->len; i++) {
        if (strcmp(list->items[i].name, name) == 0) {
            *found = &list->items[i];
            return true;
        }
    }
    free_entries(list);
    return sp_fail(err, E(NOT_FOUND), "no raw volume %s", name);
}

static void fill_info(const char *name, uint64_t size, uint8_t kind,
                      exports_snapport_backend_backend_volume_info_t *ret) {
    memset(ret, 0, sizeof *ret);
    ret->name = sp_dup(name);
    ret->size = size;
    ret->kind = kind;
    ret->format = sp_dup("raw");
}

static exports_snapport_backend_backend_own_volume_t
new_volume(uint32_t device, const char *name, uint64_t size, uint8_t kind, bool created) {
    exports_snapport_backend_backend_volume_t *v = malloc(sizeof *v);
    if (!v) sp_panic("out of memory opening a volume");
    *v = (exports_snapport_backend_backend_volume_t){device, strdup(name), size, kind, created};
    return exports_snapport_backend_backend_volume_new(v);
}

void exports_snapport_backend_backend_info(exports_snapport_backend_backend_plugin_info_t *ret) {
    ret->name = sp_dup(SNAPPORT_PLUGIN_NAME);
    ret->version = sp_dup(SNAPPORT_PLUGIN_VERSION);
    ret->description = sp_dup("raw image files in folder 0 and granted devices (C)");
    ret->capabilities = SNAPPORT_BACKEND_TYPES_CAPABILITIES_READ
        | SNAPPORT_BACKEND_TYPES_CAPABILITIES_WRITE
        | SNAPPORT_BACKEND_TYPES_CAPABILITIES_VOLUME_CREATE
        | SNAPPORT_BACKEND_TYPES_CAPABILITIES_VOLUME_DELETE;
}

bool exports_snapport_backend_backend_list_volumes(
    exports_snapport_backend_backend_list_volume_info_t *ret, sp_error *err) {
    entries_t list;
    if (!find_volumes(&list, err)) return false;
    ret->len = list.len;
    ret->ptr = calloc(list.len ? list.len : 1, sizeof *ret->ptr);
    if (!ret->ptr) sp_panic("out of memory listing volumes");
    for (size_t i = 0; i < list.len; i++)
        fill_info(list.items[i].name, list.items[i].size, list.items[i].kind, &ret->ptr[i]);
    free_entries(&list);
    return true;
}

bool exports_snapport_backend_backend_list_snapshots(
    sp_string *volume, exports_snapport_backend_backend_list_snapshot_info_t *ret, sp_error *err) {
    (void)err;
    sp_free_arg(volume);
    ret->ptr = NULL;
    ret->len = 0;
    return true;
}

bool exports_snapport_backend_backend_open_volume(
    sp_string *volume, sp_string *snapshot, uint8_t access,
    exports_snapport_backend_backend_own_volume_t *ret, sp_error *err) {
    char *name = sp_cstr(volume);
    bool ok = false;
    entries_t list;
    entry_t *v;
    if (snapshot) {
        sp_fail(err, E(UNSUPPORTED), "raw volumes have no snapshots");
    } else if (find(name, &list, &v, err)) {
        uint32_t device;
        sp_string target = sp_str(v->target);
        uint64_t size;
        if (access == SNAPPORT_BACKEND_TYPES_ACCESS_READ_WRITE && v->kind == IMAGE) {
            sp_fail(err, E(PERMISSION_DENIED), "vi/%s is a read-only image", name);
        } else if ((v->file ? snapport_backend_host_open_in(FOLDER, &target, access, &device, err)
                            : snapport_backend_host_open(&target, NULL, access, &device, err))
                   && snapport_backend_host_device_size(device, &size, err)) {
            *ret = new_volume(device, name, size, v->kind, false);
            ok = true;
        }
        free_entries(&list);
    }
    free(name);
    sp_free_arg(volume);
    sp_free_arg(snapshot);
    return ok;
}

// A name a new volume may have: no path, not hidden, not ending like an image.
static bool good_name(const char *name) {
    return name[0] && name[0] != '.' && !strchr(name, '/') && !sp_ends_with(name, IMAGE_MARK)
        && strlen(name) <= 200;
}

bool exports_snapport_backend_backend_create_volume(
    sp_string *name_s, uint64_t size, uint8_t kind, sp_string *parent,
    exports_snapport_backend_backend_own_volume_t *ret, sp_error *err) {
    char *name = sp_cstr(name_s);
    bool ok = false;
    entries_t list;
    entry_t *existing;
    sp_error ignored; // find's answer when the name is free
    if (parent) {
        sp_fail(err, E(UNSUPPORTED), "raw volumes cannot be thin clones; make a full copy");
    } else if (!good_name(name) || memchr(name_s->ptr, 0, name_s->len)) {
        sp_fail(err, E(INVALID_ARGUMENT), "\"%s\" cannot name a volume", name);
    } else if (find(name, &list, &existing, &ignored)) {
        free_entries(&list);
        sp_fail(err, E(CONFLICT), "volume %s exists already", name);
    } else if (ignored.tag != E(NOT_FOUND)) {
        *err = ignored; // the listing itself failed
    } else {
        snapport_backend_types_backend_error_free(&ignored);
        char file[256];
        sp_format(file, sizeof file, "%s%s%s", name, kind == IMAGE ? IMAGE_MARK : "", SUFFIX);
        sp_string path = sp_str(file);
        uint32_t device;
        if (snapport_backend_host_create_file_in(FOLDER, &path, &device, err)
            && snapport_backend_host_set_size(device, size, err)) {
            *ret = new_volume(device, name, size, kind, true);
            ok = true;
        }
    }
    free(name);
    sp_free_arg(name_s);
    sp_free_arg(parent);
    return ok;
}

bool exports_snapport_backend_backend_delete_volume(sp_string *name_s, sp_error *err) {
    char *name = sp_cstr(name_s);
    bool ok = false;
    entries_t list;
    entry_t *v;
    if (find(name, &list, &v, err)) {
        if (!v->file) {
            sp_fail(err, E(UNSUPPORTED), "%s is a granted device; the operator owns it", name);
        } else {
            sp_string path = sp_str(v->target);
            ok = snapport_backend_host_remove_in(FOLDER, &path, err);
        }
        free_entries(&list);
    }
    free(name);
    sp_free_arg(name_s);
    return ok;
}

bool exports_snapport_backend_backend_create_snapshot(
    sp_string *volume, sp_string *name, uint64_t created_unix_ms,
    exports_snapport_backend_backend_snapshot_info_t *ret, sp_error *err) {
    (void)created_unix_ms, (void)ret;
    sp_free_arg(volume);
    sp_free_arg(name);
    return sp_fail(err, E(UNSUPPORTED), "raw volumes have no snapshots");
}

bool exports_snapport_backend_backend_delete_snapshot(sp_string *volume, sp_string *name,
                                                      sp_error *err) {
    sp_free_arg(volume);
    sp_free_arg(name);
    return sp_fail(err, E(UNSUPPORTED), "raw volumes have no snapshots");
}

bool exports_snapport_backend_backend_restore_snapshot(sp_string *volume, sp_string *name,
                                                       sp_error *err) {
    sp_free_arg(volume);
    sp_free_arg(name);
    return sp_fail(err, E(UNSUPPORTED), "raw volumes have no snapshots");
}

void exports_snapport_backend_backend_method_volume_info(
    exports_snapport_backend_backend_borrow_volume_t self,
    exports_snapport_backend_backend_volume_info_t *ret) {
    fill_info(self->name, self->size, self->kind, ret);
}

// One data extent from `start` to the end: the bytes are where they are.
bool exports_snapport_backend_backend_method_volume_map_extents(
    exports_snapport_backend_backend_borrow_volume_t self, uint64_t start, uint32_t max_extents,
    exports_snapport_backend_backend_extent_page_t *ret, sp_error *err) {
    (void)max_extents, (void)err;
    memset(ret, 0, sizeof *ret);
    if (start >= self->size) return true;
    ret->extents.ptr = malloc(sizeof *ret->extents.ptr);
    if (!ret->extents.ptr) sp_panic("out of memory mapping extents");
    ret->extents.len = 1;
    ret->extents.ptr[0] = (snapport_backend_types_extent_t){
        .offset = start,
        .length = self->size - start,
        .location = {.tag = SNAPPORT_BACKEND_TYPES_LOCATION_DATA,
                     .val.data = {.device = self->device, .offset = start}},
    };
    return true;
}

bool exports_snapport_backend_backend_method_volume_changed_extents(
    exports_snapport_backend_backend_borrow_volume_t self, sp_string *base, uint64_t start,
    uint32_t max_extents, exports_snapport_backend_backend_extent_page_t *ret, sp_error *err) {
    (void)self, (void)start, (void)max_extents, (void)ret;
    sp_free_arg(base);
    return sp_fail(err, E(UNSUPPORTED), "raw volumes have no snapshots");
}

bool exports_snapport_backend_backend_method_volume_decode(
    exports_snapport_backend_backend_borrow_volume_t self, uint32_t codec,
    backend_plugin_list_u8_t *stored, uint32_t decoded_length, backend_plugin_list_u8_t *ret,
    sp_error *err) {
    (void)self, (void)decoded_length, (void)ret;
    backend_plugin_list_u8_free(stored);
    return sp_fail(err, E(UNSUPPORTED), "raw volumes have no codec %u", (unsigned)codec);
}

// The host writes at the same offsets, zeros included (a sparse file reads zeros anyway).
bool exports_snapport_backend_backend_method_volume_allocate(
    exports_snapport_backend_backend_borrow_volume_t self, uint64_t offset, uint64_t length,
    bool zero, exports_snapport_backend_backend_list_extent_t *ret, sp_error *err) {
    (void)zero;
    if (offset > self->size || length > self->size - offset)
        return sp_fail(err, E(OUT_OF_RANGE), "%llu bytes at %llu do not fit in %llu bytes",
                       (unsigned long long)length, (unsigned long long)offset,
                       (unsigned long long)self->size);
    ret->ptr = malloc(sizeof *ret->ptr);
    if (!ret->ptr) sp_panic("out of memory allocating");
    ret->len = 1;
    ret->ptr[0] = (snapport_backend_types_extent_t){
        .offset = offset,
        .length = length,
        .location = {.tag = SNAPPORT_BACKEND_TYPES_LOCATION_DATA,
                     .val.data = {.device = self->device, .offset = offset}},
    };
    return true;
}

bool exports_snapport_backend_backend_method_volume_commit(
    exports_snapport_backend_backend_borrow_volume_t self, sp_error *err) {
    if (!snapport_backend_host_flush(self->device, err)) return false;
    if (self->created) {
        if (!snapport_backend_host_publish_file(self->device, err)) return false;
        self->created = false;
    }
    return true;
}

void exports_snapport_backend_backend_volume_destructor(
    exports_snapport_backend_backend_volume_t *rep) {
    free(rep->name);
    free(rep);
}
