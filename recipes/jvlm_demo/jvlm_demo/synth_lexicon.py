"""The shared multilingual word list of the synthetic world.

Every word that appears in a generated image, and every answer word, comes from here, so
each language has a small closed vocabulary a tiny model can learn, and the text-only
translation task asks about exactly the words the images show.

Rows are written in the order of ``LANGUAGES``: English, Chinese (Simplified), Arabic,
Portuguese (Brazilian spelling), Russian, Turkish. Some entries carry extra grammatical
forms (Russian genitive, Arabic definite, Portuguese article) because the question
templates need them to stay grammatical without a morphology engine.
"""

from __future__ import annotations

LANGUAGES: tuple[str, ...] = ("en", "zh", "ar", "pt", "ru", "tr")

#: languages written right to left (layout mirrors for them)
RTL_LANGUAGES = frozenset({"ar"})

Row = dict[str, str]


def row(*words: str) -> Row:
    """One word in every language, given in ``LANGUAGES`` order."""
    if len(words) != len(LANGUAGES):
        raise ValueError(f"expected {len(LANGUAGES)} words ({', '.join(LANGUAGES)}), got {len(words)}: {words}")
    return dict(zip(LANGUAGES, words))


# --- colours -------------------------------------------------------------------------
# "name": the answer form. "which": the form that fits "which shape is <colour>?"
# (Arabic definite noun phrase, Portuguese feminine to agree with "cor", Russian genitive
# before "цвета"; other languages reuse the name).

COLOURS: dict[str, dict] = {
    "red": {"rgb": (214, 39, 40), "name": row("red", "红色", "أحمر", "vermelho", "красный", "kırmızı"),
            "which": {"ar": "الأحمر", "pt": "vermelha", "ru": "красного"}},
    "blue": {"rgb": (31, 90, 200), "name": row("blue", "蓝色", "أزرق", "azul", "синий", "mavi"),
             "which": {"ar": "الأزرق", "pt": "azul", "ru": "синего"}},
    "green": {"rgb": (34, 150, 60), "name": row("green", "绿色", "أخضر", "verde", "зелёный", "yeşil"),
              "which": {"ar": "الأخضر", "pt": "verde", "ru": "зелёного"}},
    "yellow": {"rgb": (240, 200, 20), "name": row("yellow", "黄色", "أصفر", "amarelo", "жёлтый", "sarı"),
               "which": {"ar": "الأصفر", "pt": "amarela", "ru": "жёлтого"}},
    "orange": {"rgb": (245, 127, 20), "name": row("orange", "橙色", "برتقالي", "laranja", "оранжевый", "turuncu"),
               "which": {"ar": "البرتقالي", "pt": "laranja", "ru": "оранжевого"}},
    "purple": {"rgb": (135, 60, 180), "name": row("purple", "紫色", "بنفسجي", "roxo", "фиолетовый", "mor"),
               "which": {"ar": "البنفسجي", "pt": "roxa", "ru": "фиолетового"}},
    "black": {"rgb": (25, 25, 25), "name": row("black", "黑色", "أسود", "preto", "чёрный", "siyah"),
              "which": {"ar": "الأسود", "pt": "preta", "ru": "чёрного"}},
    "brown": {"rgb": (125, 80, 40), "name": row("brown", "棕色", "بني", "marrom", "коричневый", "kahverengi"),
              "which": {"ar": "البني", "pt": "marrom", "ru": "коричневого"}},
    "white": {"rgb": (250, 250, 250), "name": row("white", "白色", "أبيض", "branco", "белый", "beyaz"),
              "which": {"ar": "الأبيض", "pt": "branca", "ru": "белого"}},
}

#: colours that can fill a shape or a sign on a light background (white is for facts only)
PALETTE: tuple[str, ...] = ("red", "blue", "green", "yellow", "orange", "purple", "black", "brown")


def colour_name(key: str, lang: str) -> str:
    return COLOURS[key]["name"][lang]


def colour_which(key: str, lang: str) -> str:
    return COLOURS[key]["which"].get(lang, COLOURS[key]["name"][lang])


# --- shapes --------------------------------------------------------------------------
# name: answer form; the: definite ("the circle"); count: the phrase counting questions
# need (English plural, Arabic accusative after كم, Portuguese Quantos/Quantas + plural,
# Russian genitive plural, Turkish and Chinese bare noun).

SHAPES: dict[str, dict[str, Row]] = {
    "circle": {
        "name": row("circle", "圆形", "دائرة", "círculo", "круг", "daire"),
        "the": row("the circle", "圆形", "الدائرة", "o círculo", "круг", "daire"),
        "count": row("circles", "圆形", "دائرةً", "Quantos círculos", "кругов", "daire"),
    },
    "square": {
        "name": row("square", "正方形", "مربع", "quadrado", "квадрат", "kare"),
        "the": row("the square", "正方形", "المربع", "o quadrado", "квадрат", "kare"),
        "count": row("squares", "正方形", "مربعًا", "Quantos quadrados", "квадратов", "kare"),
    },
    "triangle": {
        "name": row("triangle", "三角形", "مثلث", "triângulo", "треугольник", "üçgen"),
        "the": row("the triangle", "三角形", "المثلث", "o triângulo", "треугольник", "üçgen"),
        "count": row("triangles", "三角形", "مثلثًا", "Quantos triângulos", "треугольников", "üçgen"),
    },
    "star": {
        "name": row("star", "星形", "نجمة", "estrela", "звезда", "yıldız"),
        "the": row("the star", "星形", "النجمة", "a estrela", "звезда", "yıldız"),
        "count": row("stars", "星形", "نجمةً", "Quantas estrelas", "звёзд", "yıldız"),
    },
    "hexagon": {
        "name": row("hexagon", "六边形", "شكل سداسي", "hexágono", "шестиугольник", "altıgen"),
        "the": row("the hexagon", "六边形", "الشكل السداسي", "o hexágono", "шестиугольник", "altıgen"),
        "count": row("hexagons", "六边形", "شكلًا سداسيًا", "Quantos hexágonos", "шестиугольников", "altıgen"),
    },
}

#: number of sides, for the facts task (Russian/Turkish need an inflected form there)
SHAPE_SIDES: dict[str, dict] = {
    "triangle": {"n": 3, "ru": "треугольника", "tr": "Üçgenin"},
    "square": {"n": 4, "ru": "квадрата", "tr": "Karenin"},
    "hexagon": {"n": 6, "ru": "шестиугольника", "tr": "Altıgenin"},
}

# --- shop items (receipts, tables, bar charts) ------------------------------------------

ITEMS: dict[str, Row] = {
    "apples": row("apples", "苹果", "تفاح", "maçãs", "яблоки", "elma"),
    "bananas": row("bananas", "香蕉", "موز", "bananas", "бананы", "muz"),
    "bread": row("bread", "面包", "خبز", "pão", "хлеб", "ekmek"),
    "milk": row("milk", "牛奶", "حليب", "leite", "молоко", "süt"),
    "eggs": row("eggs", "鸡蛋", "بيض", "ovos", "яйца", "yumurta"),
    "coffee": row("coffee", "咖啡", "قهوة", "café", "кофе", "kahve"),
    "tea": row("tea", "茶叶", "شاي", "chá", "чай", "çay"),
    "rice": row("rice", "大米", "أرز", "arroz", "рис", "pirinç"),
    "cheese": row("cheese", "奶酪", "جبن", "queijo", "сыр", "peynir"),
    "water": row("water", "矿泉水", "ماء", "água", "вода", "su"),
    "tomatoes": row("tomatoes", "西红柿", "طماطم", "tomates", "помидоры", "domates"),
    "chicken": row("chicken", "鸡肉", "دجاج", "frango", "курица", "tavuk"),
}


def item_the(key: str, lang: str) -> str:
    """Definite form used inside questions (only Arabic marks it on the word itself)."""
    word = ITEMS[key][lang]
    return "ال" + word if lang == "ar" else word


#: what colour an item typically is, for the facts task
ITEM_COLOURS: dict[str, str] = {"bananas": "yellow", "tomatoes": "red", "milk": "white"}

# --- numbers, days, months ---------------------------------------------------------------

NUMBER_WORDS: dict[int, Row] = {
    1: row("one", "一", "واحد", "um", "один", "bir"),
    2: row("two", "二", "اثنان", "dois", "два", "iki"),
    3: row("three", "三", "ثلاثة", "três", "три", "üç"),
    4: row("four", "四", "أربعة", "quatro", "четыре", "dört"),
    5: row("five", "五", "خمسة", "cinco", "пять", "beş"),
    6: row("six", "六", "ستة", "seis", "шесть", "altı"),
    7: row("seven", "七", "سبعة", "sete", "семь", "yedi"),
    8: row("eight", "八", "ثمانية", "oito", "восемь", "sekiz"),
    9: row("nine", "九", "تسعة", "nove", "девять", "dokuz"),
    10: row("ten", "十", "عشرة", "dez", "десять", "on"),
}

WEEKDAYS: list[Row] = [
    row("Monday", "星期一", "الاثنين", "segunda-feira", "понедельник", "Pazartesi"),
    row("Tuesday", "星期二", "الثلاثاء", "terça-feira", "вторник", "Salı"),
    row("Wednesday", "星期三", "الأربعاء", "quarta-feira", "среда", "Çarşamba"),
    row("Thursday", "星期四", "الخميس", "quinta-feira", "четверг", "Perşembe"),
    row("Friday", "星期五", "الجمعة", "sexta-feira", "пятница", "Cuma"),
    row("Saturday", "星期六", "السبت", "sábado", "суббота", "Cumartesi"),
    row("Sunday", "星期日", "الأحد", "domingo", "воскресенье", "Pazar"),
]
#: Russian genitive ("after Monday" = "после понедельника")
WEEKDAYS_RU_GEN = ["понедельника", "вторника", "среды", "четверга", "пятницы", "субботы", "воскресенья"]

#: short day names for table headers (Arabic has no customary abbreviation)
WEEKDAYS_SHORT: list[Row] = [
    row("Mon", "周一", "الاثنين", "seg", "Пн", "Pzt"),
    row("Tue", "周二", "الثلاثاء", "ter", "Вт", "Sal"),
    row("Wed", "周三", "الأربعاء", "qua", "Ср", "Çar"),
    row("Thu", "周四", "الخميس", "qui", "Чт", "Per"),
    row("Fri", "周五", "الجمعة", "sex", "Пт", "Cum"),
    row("Sat", "周六", "السبت", "sáb", "Сб", "Cmt"),
    row("Sun", "周日", "الأحد", "dom", "Вс", "Paz"),
]

#: short month names for chart axes (Arabic uses the full names, which are short)
MONTHS_SHORT: list[Row] = [
    row("Jan", "1月", "يناير", "jan", "янв", "Oca"),
    row("Feb", "2月", "فبراير", "fev", "фев", "Şub"),
    row("Mar", "3月", "مارس", "mar", "мар", "Mar"),
    row("Apr", "4月", "أبريل", "abr", "апр", "Nis"),
    row("May", "5月", "مايو", "mai", "май", "May"),
    row("Jun", "6月", "يونيو", "jun", "июн", "Haz"),
    row("Jul", "7月", "يوليو", "jul", "июл", "Tem"),
    row("Aug", "8月", "أغسطس", "ago", "авг", "Ağu"),
    row("Sep", "9月", "سبتمبر", "set", "сен", "Eyl"),
    row("Oct", "10月", "أكتوبر", "out", "окт", "Eki"),
    row("Nov", "11月", "نوفمبر", "nov", "ноя", "Kas"),
    row("Dec", "12月", "ديسمبر", "dez", "дек", "Ara"),
]

# --- signs ---------------------------------------------------------------------------------

SIGNS: dict[str, Row] = {
    "stop": row("STOP", "停", "قف", "PARE", "СТОП", "DUR"),
    "exit": row("EXIT", "出口", "مخرج", "SAÍDA", "ВЫХОД", "ÇIKIŞ"),
    "entrance": row("ENTRANCE", "入口", "مدخل", "ENTRADA", "ВХОД", "GİRİŞ"),
    "open": row("OPEN", "营业中", "مفتوح", "ABERTO", "ОТКРЫТО", "AÇIK"),
    "closed": row("CLOSED", "已打烊", "مغلق", "FECHADO", "ЗАКРЫТО", "KAPALI"),
    "no_parking": row("NO PARKING", "禁止停车", "ممنوع الوقوف", "PROIBIDO ESTACIONAR", "СТОЯНКА ЗАПРЕЩЕНА", "PARK YAPILMAZ"),
    "no_smoking": row("NO SMOKING", "禁止吸烟", "ممنوع التدخين", "PROIBIDO FUMAR", "НЕ КУРИТЬ", "SİGARA İÇİLMEZ"),
    "pharmacy": row("PHARMACY", "药店", "صيدلية", "FARMÁCIA", "АПТЕКА", "ECZANE"),
    "caution": row("CAUTION", "小心", "انتبه", "CUIDADO", "ОСТОРОЖНО", "DİKKAT"),
    "push": row("PUSH", "推", "ادفع", "EMPURRE", "ОТ СЕБЯ", "İTİNİZ"),
}

# --- people, places, shops (forms and receipts) ---------------------------------------------

FIRST_NAMES: dict[str, list[tuple[str, str]]] = {  # (name, "m"/"f")
    "en": [("James", "m"), ("Emma", "f"), ("Oliver", "m"), ("Sophia", "f"), ("Daniel", "m"), ("Grace", "f")],
    "zh": [("伟", "m"), ("芳", "f"), ("磊", "m"), ("静", "f"), ("洋", "m"), ("婷", "f")],
    "ar": [("محمد", "m"), ("فاطمة", "f"), ("أحمد", "m"), ("مريم", "f"), ("علي", "m"), ("ليلى", "f")],
    "pt": [("João", "m"), ("Maria", "f"), ("Pedro", "m"), ("Ana", "f"), ("Lucas", "m"), ("Beatriz", "f")],
    "ru": [("Иван", "m"), ("Анна", "f"), ("Дмитрий", "m"), ("Ольга", "f"), ("Сергей", "m"), ("Мария", "f")],
    "tr": [("Ahmet", "m"), ("Ayşe", "f"), ("Mehmet", "m"), ("Elif", "f"), ("Can", "m"), ("Zeynep", "f")],
}
#: Russian surnames are the masculine form; the feminine adds "а" (Иванов -> Иванова)
LAST_NAMES: dict[str, list[str]] = {
    "en": ["Smith", "Brown", "Wilson", "Taylor", "Clark", "Hughes"],
    "zh": ["王", "李", "张", "刘", "陈", "杨"],
    "ar": ["حسن", "خليل", "منصور", "سعيد", "عمر", "نصار"],
    "pt": ["Silva", "Santos", "Oliveira", "Costa", "Pereira", "Almeida"],
    "ru": ["Иванов", "Петров", "Смирнов", "Козлов", "Соколов", "Попов"],
    "tr": ["Yılmaz", "Kaya", "Demir", "Şahin", "Çelik", "Öztürk"],
}


def full_name(lang: str, first: tuple[str, str], last: str) -> str:
    """A person's name as a form shows it (Chinese: surname first, no space)."""
    name, gender = first
    if lang == "zh":
        return last + name
    if lang == "ru" and gender == "f":
        last = last + "а"
    return f"{name} {last}"


CITIES: dict[str, list[str]] = {
    "en": ["London", "New York", "Sydney", "Toronto", "Dublin", "Chicago"],
    "zh": ["北京", "上海", "广州", "成都", "杭州", "西安"],
    "ar": ["القاهرة", "دبي", "الرياض", "عمّان", "بيروت", "تونس"],
    "pt": ["Lisboa", "Porto", "São Paulo", "Recife", "Salvador", "Curitiba"],
    "ru": ["Москва", "Казань", "Самара", "Омск", "Томск", "Пермь"],
    "tr": ["İstanbul", "Ankara", "İzmir", "Bursa", "Antalya", "Konya"],
}

STORES: dict[str, list[str]] = {
    "en": ["Green Market", "Corner Shop", "Sunny Foods", "City Mart"],
    "zh": ["绿叶超市", "阳光便利店", "好邻居商店", "新华超市"],
    "ar": ["سوق الخير", "بقالة النور", "متجر السلام", "سوق المدينة"],
    "pt": ["Mercado Central", "Padaria Sol", "Mercearia Boa Vista", "Super Lar"],
    "ru": ["Свежий рынок", "Гастроном", "Лавка у дома", "Берёзка"],
    "tr": ["Güneş Market", "Köşe Bakkal", "Yıldız Market", "Şehir Market"],
}

def colon(lang: str) -> str:
    """The colon after a field label (Chinese uses the full-width one)."""
    return "：" if lang == "zh" else ":"


#: decimal separator as each language prints prices
DECIMAL_SEP: dict[str, str] = {"en": ".", "zh": ".", "ar": ".", "pt": ",", "ru": ",", "tr": ","}


def format_price(cents: int, lang: str) -> str:
    """A price as printed on a receipt and given as the answer (e.g. "4.50" / "4,50")."""
    return f"{cents // 100}{DECIMAL_SEP[lang]}{cents % 100:02d}"


def format_date(year: int, month: int, day: int, lang: str) -> str:
    """ISO dates for en/zh/ar; day-first dates where that is the custom (pt, ru, tr)."""
    if lang == "pt":
        return f"{day:02d}/{month:02d}/{year}"
    if lang in ("ru", "tr"):
        return f"{day:02d}.{month:02d}.{year}"
    return f"{year}-{month:02d}-{day:02d}"
